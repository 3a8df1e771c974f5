"""A chat bot's clip handler: one call per user message, replies through any chat transport.

The handler knows nothing of Telegram, Discord or Slack: a transport calls
``await bot.handle_message(user_id, image_path, video_path, send)`` with the files the user sent
(saved to disk) and ``send``, an async callable that posts a text back to that user. Run each
call in its own task, as chat frameworks do for each message; one call lasts as long as the clip.

What it shows:

* a per-user limit (``max_per_user`` clips at a time): a user who asks for more is told they
  already have one in progress, at once, while other users are served;
* progress messages from the library's ``JobEvent``s (files checked, uploaded, queued,
  rendering), a few per clip rather than one per poll;
* friendly refusals: a file that breaks a rule of the service is named with the rule and what to
  do about it, before anything is uploaded or paid; service errors (402 out of credits, 401, rate
  limits, outages) become plain sentences. The API key is never in a reply: replies are built
  from fixed texts, file names and the service's own reasons, never from exception dumps.

Try it from a terminal (the replies are printed)::

    python examples/chat_bot.py character.png dance.mp4 --out clips/

Configuration comes from the environment: ``KIE_API_KEY`` (required) and ``KIE_BASE_URL`` (to
point it at a simulator: ``python -m kling_async.simulator --time-scale 0.01`` prints both).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from kling_async import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    CreditLimitError,
    EdgeBlockedError,
    GenerationResult,
    InsufficientCreditsError,
    InvalidRequestError,
    JobEvent,
    JobEventKind,
    KlingSession,
    MediaValidationError,
    QuotaExceededError,
    RateLimitError,
    Rule,
    ServerError,
    ServiceUnavailableError,
    SubmissionUnknownError,
    TaskFailedError,
    TaskTimeoutError,
    TransportError,
)
from kling_async.rules import MAX_PROMPT_CHARS

log = logging.getLogger("chat_bot")

#: Posts one text message back to the user.
Send = Callable[[str], Awaitable[None]]

#: What each rule means to someone who just sent a file: (for an image, for a video).
_WHY: dict[str, tuple[str, str]] = {
    Rule.UNREADABLE: ("I could not open it", "I could not open it"),
    Rule.FORMAT: (
        "it is not a JPEG or PNG picture",
        "it is not an MP4, MOV or MKV video",
    ),
    Rule.MAX_SIZE: ("it is larger than 10 MB", "it is larger than 100 MB"),
    Rule.MIN_DIMENSIONS: (
        "it is too small: each side must be more than 300 pixels",
        "it is too small",
    ),
    Rule.ASPECT_RATIO: (
        "it is too tall or too wide: the sides must be at most 5:2 apart",
        "it is too tall or too wide",
    ),
    Rule.MIN_DURATION: ("it is too short", "it is too short: motion videos need at least 3 s"),
    Rule.MAX_DURATION: (
        "it is too long",
        "it is too long: motion videos can last up to 30 s (10 s when the character keeps the "
        "picture's pose)",
    ),
}
#: Anything else (cut short, damaged headers, no video track...) reads as a damaged file.
_DAMAGED = "it looks damaged or incomplete; try exporting it again"


def rejection_text(error: MediaValidationError) -> str:
    """A friendly refusal naming the file (not its folder), what is wrong, and the rule."""
    medium = error.medium or "file"
    image, video = _WHY.get(error.rule, (_DAMAGED, _DAMAGED))
    why = image if medium == "image" else video
    return (
        f"Sorry, I can't use your {medium} “{Path(error.path).name}”: {why} ({error.detail}; "
        f"rule: {error.rule}). Send another one and I'll try again."
    )


def error_text(error: BaseException) -> str:
    """A plain sentence for any other failure; the operator's details go to the log."""
    if isinstance(error, MediaValidationError):
        return rejection_text(error)
    if isinstance(error, InsufficientCreditsError | QuotaExceededError | CreditLimitError):
        return (
            "Sorry, I can't make clips right now: the bot's account has run out of credits. "
            "The operator has been told; please try again later."
        )
    if isinstance(error, AuthenticationError | EdgeBlockedError | ConfigurationError):
        return (
            "Sorry, I can't make clips right now because of a problem with my setup. "
            "The operator has been told."
        )
    if isinstance(error, TaskFailedError):
        reason = f" ({error.fail_msg})" if error.fail_msg else ""
        return (
            f"The video service could not make this clip{reason}. A clip that fails costs "
            "nothing; a clearer picture or video may work."
        )
    if isinstance(error, TaskTimeoutError):
        return (
            "Your clip is taking far longer than usual, so I stopped waiting for it. "
            "Please try again later."
        )
    if isinstance(error, SubmissionUnknownError):
        # Sending again could make (and charge for) a second clip: a person checks first.
        return (
            "The connection dropped just as your clip was being ordered, so I can't tell "
            "whether it was made. The operator will check; please don't resend it yet."
        )
    if isinstance(error, InvalidRequestError):
        return f"The video service refused this clip: {error.message}."
    if isinstance(
        error,
        RateLimitError | ServiceUnavailableError | ServerError | TransportError | APIError,
    ):
        return (
            "The video service is busy or unreachable right now. Please try again in a few minutes."
        )
    return "Something went wrong on my side. The operator has been told."


class ClipBot:
    """Makes clips for chat users, at most ``max_per_user`` at a time for each user."""

    def __init__(
        self,
        session: KlingSession,
        *,
        download_to: str | os.PathLike[str],
        max_per_user: int = 1,
        timeout: float = 30 * 60,
    ) -> None:
        if max_per_user < 1:
            raise ValueError("max_per_user must be at least 1")
        self.session = session
        self.download_to = Path(download_to)
        self.max_per_user = max_per_user
        self.timeout = timeout
        #: Clips in progress, per user.
        self.busy: Counter[str] = Counter()

    async def handle_message(
        self,
        user_id: str,
        image_path: str | os.PathLike[str],
        video_path: str | os.PathLike[str],
        send: Send,
        *,
        prompt: str | None = None,
    ) -> GenerationResult | None:
        """Make one clip for ``user_id``, telling them how it goes; None if none was made."""
        # Checked and taken with no await in between, so two messages cannot both pass.
        if self.busy[user_id] >= self.max_per_user:
            if self.max_per_user == 1:
                await send("You already have a clip in progress. Send this again when it's done.")
            else:
                await send(
                    f"You already have {self.busy[user_id]} clips in progress, the most I make "
                    "at once. Send this again when one is done."
                )
            return None
        if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
            await send(f"Your description is too long: at most {MAX_PROMPT_CHARS} characters.")
            return None
        self.busy[user_id] += 1
        try:
            return await self._make(user_id, image_path, video_path, send, prompt)
        finally:
            self.busy[user_id] -= 1
            if not self.busy[user_id]:
                del self.busy[user_id]

    async def _make(
        self,
        user_id: str,
        image_path: str | os.PathLike[str],
        video_path: str | os.PathLike[str],
        send: Send,
        prompt: str | None,
    ) -> GenerationResult | None:
        await send("Got it! Checking your picture and video…")
        validated = 0
        rendering = False
        told_percent = 0

        async def on_event(event: JobEvent) -> None:
            # A few messages per clip: a chat is not a log, so most steps stay silent.
            nonlocal validated, rendering, told_percent
            if event.kind is JobEventKind.VALIDATED:
                validated += 1
                if validated == 2:
                    await send("Both files look good. Uploading them…")
            elif (
                event.kind is JobEventKind.UPLOADING
                and event.detail == "video"
                and event.total
                and event.bytes is not None
            ):
                # The video is the long upload: say so at each quarter, once (a chat is no bar).
                quarter = 25 * (100 * event.bytes // event.total // 25)
                if quarter > told_percent:
                    told_percent = quarter
                    await send(f"Uploading your video: {quarter}%")
            elif event.kind is JobEventKind.CREATED:
                await send("Your clip is in the queue.")
            elif (
                event.kind is JobEventKind.STATE_CHANGED
                and event.task is not None
                and event.task.state.value == "generating"
                and not rendering
            ):
                rendering = True
                await send("Rendering your clip now; this usually takes a minute or two…")

        try:
            result = await self.session.generate(
                image_path,
                video_path,
                prompt=prompt,
                download_to=self.download_to,
                on_event=on_event,
                timeout=self.timeout,
            )
        except MediaValidationError as exc:
            await send(rejection_text(exc))
            return None
        except Exception as exc:  # every failure gets an answer; the operator gets the details
            log.warning("clip for user %s failed: %s: %s", user_id, type(exc).__name__, exc)
            await send(error_text(exc))
            return None
        names = ", ".join(path.name for path in result.files) or "no file"
        await send(f"Your clip is ready: {names}")
        return result


async def _console(image: Path, video: Path, out: Path, user: str) -> int:
    async def send(text: str) -> None:
        print(f"bot: {text}", flush=True)

    async with KlingSession() as kling:  # reads KIE_API_KEY and KIE_BASE_URL
        bot = ClipBot(kling, download_to=out)
        result = await bot.handle_message(user, image, video, send)
    return 0 if result is not None else 1


def main(argv: list[str] | None = None) -> int:
    """Play one user's message from the terminal; print the bot's replies."""
    parser = argparse.ArgumentParser(prog="chat_bot.py", description="One message to the bot.")
    parser.add_argument("image", type=Path)
    parser.add_argument("video", type=Path)
    parser.add_argument("--out", type=Path, default=Path("clips"))
    parser.add_argument("--user", default="console")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_console(args.image, args.video, args.out, args.user))
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
