"""``kling-async batch``: manifests as spreadsheets write them, dry runs that know the journal, and
a summary that tells this run's spend from earlier runs'. Run as a subprocess against the
simulator over real HTTP.
"""

from __future__ import annotations

import json
from pathlib import Path

from .cli_run import assert_no_key_was_printed, cli, manifest
from .conftest import MEDIA, SimFactory

IMAGE = MEDIA / "portrait.png"
VIDEO = MEDIA / "d3.0.mp4"  # 33 credits at 720p on 2.6


async def test_an_excel_manifest_is_read(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = await make_sim(time_scale=0.002)
    # Excel's "CSV UTF-8": a byte-order mark; a locale that separates with ';'; headers typed
    # by hand, with capitals and stray spaces.
    path = tmp_path / "jobs.csv"
    rows = "".join(f"{IMAGE};{VIDEO};k{n}\r\n" for n in range(2))
    path.write_bytes(("\ufeff Image ;VIDEO;Key \r\n" + rows).encode("utf-8"))
    code, text = await cli("batch", str(path), "--dry-run", sim=sim)
    assert code == 0 and "2 jobs, about 66 credits" in text, text
    code, text = await cli("batch", str(path), "--out", str(tmp_path / "clips"), sim=sim)
    assert code == 0 and "summary: ok 2" in text, text
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == ["k0.mp4", "k1.mp4"]


async def test_the_same_job_twice_is_found_before_anything_is_sent(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(time_scale=0.002)
    twice = manifest(tmp_path / "twice.csv", [f"{IMAGE},{VIDEO}"] * 2, header="image,video")
    code, text = await cli("batch", str(twice), "--dry-run", sim=sim)
    assert code == 1 and "twice.csv:3: the same job as line 2" in text, text
    assert "error: 1 bad row; fix it or pass --skip-invalid" in text
    keyed = manifest(
        tmp_path / "keyed.csv", [f"{IMAGE},{VIDEO},a,k1,720p", f"{IMAGE},{VIDEO},b,k1,720p"]
    )
    code, text = await cli("batch", str(keyed), sim=sim)
    assert code == 1 and "keyed.csv:3: the key 'k1' is already line 2's" in text, text
    assert sim.count("createTask") == 0


async def test_a_header_problem_is_reported_once(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = await make_sim(time_scale=0.002)
    rows = [f"{IMAGE},{VIDEO},p{n}" for n in range(5)]
    path = manifest(tmp_path / "jobs.csv", rows, header="image,video,promt")
    code, text = await cli("batch", str(path), "--dry-run", sim=sim)
    assert code == 1 and text.count("promt") == 1, text
    assert "jobs.csv:1: unknown column 'promt'; did you mean 'prompt'?" in text
    assert "jobs.csv:2" not in text and "no row was judged" in text


async def test_skip_invalid_with_no_valid_row_fails(make_sim: SimFactory, tmp_path: Path) -> None:
    sim = await make_sim(time_scale=0.002)
    path = manifest(tmp_path / "jobs.csv", [f"{IMAGE},{VIDEO},,k{n},999p" for n in range(2)])
    code, text = await cli("batch", str(path), "--skip-invalid", sim=sim)
    assert code == 1 and "no valid rows" in text and sim.count("createTask") == 0, text
    code, text = await cli("batch", str(path), sim=sim)
    assert code == 1 and "2 bad rows; fix them" in text


async def test_dry_runs_and_summaries_know_what_earlier_runs_did(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim = await make_sim(time_scale=0.002)
    path = manifest(tmp_path / "jobs.csv", [f"{IMAGE},{VIDEO},p{n},k{n},720p" for n in range(3)])
    journal = tmp_path / "batch.sqlite"
    batch = ["batch", str(path), "--journal", str(journal), "--out", str(tmp_path / "clips")]
    # A dry run leaves no journal behind.
    code, text = await cli(*batch, "--dry-run", "--max-credits", "70", sim=sim)
    assert code == 1 and "99 credits is over --max-credits 70: 1 job would be refused" in text
    assert not journal.exists()
    code, text = await cli(*batch, "--max-credits", "70", sim=sim)
    assert code == 1 and sim.tasks_created[sim.api_key] == 2, text
    assert "66 credits used now" in text and "earlier runs" not in text
    # The journal holds two done: only the third would be created, and costs 33.
    code, text = await cli(*batch, "--dry-run", "--json", "--max-credits", "40", sim=sim)
    plan = json.loads(text.splitlines()[0])
    assert code == 0 and plan["to_create"] == 1 and plan["already_done"] == 2, text
    assert plan["credits"] == 33 and plan["refused"] == 0
    code, text = await cli(*batch, "--dry-run", "--max-credits", "20", sim=sim)
    assert code == 1 and "already done: 2" in text and "1 job would be refused" in text, text
    code, text = await cli(*batch, sim=sim)
    assert code == 0 and sim.tasks_created[sim.api_key] == 3, text
    assert "33 credits used now ($0.17); 66 by tasks earlier runs created" in text
    code, text = await cli(*batch, "--json", sim=sim)
    summary = json.loads(text.splitlines()[-1])
    assert summary["credits"] == 0 and summary["credits_earlier_runs"] == 99, text


def test_no_output_ever_showed_a_key() -> None:
    # Runs last in this file: every output the commands above printed.
    assert_no_key_was_printed()
