"""The Lua scripts of :mod:`kling_async.redis._journal`: each one step, atomic in Redis.

Every script a worker runs checks the batch's marker (``batch``: a random id set when the first
worker joined): a marker gone, or a job's record gone while the batch's list of statuses still
names it, means Redis lost data (a restart without persistence, keys evicted), and the script
answers ``lost`` instead of starting the job over, which would pay for it twice.

Bounds: text only; :class:`~kling_async.redis.RedisJournal` runs them.
"""

from __future__ import annotations

from ._connect import NOW

__all__ = ["BEAT", "CLAIM", "FINISH", "JOIN", "LAND", "LEAVE", "LOST", "RELEASE", "UPDATE"]

#: What a script answers when the journal's records are gone from Redis.
LOST = "lost"

# KEYS: workers, run, batch, statuses. ARGV: worker, lease, a new batch id.
# Returns {run, batch id}. A worker that finds nobody alive starts a new run.
JOIN = (
    NOW
    + """
local batch = redis.call('GET', KEYS[3])
if not batch then
  if redis.call('EXISTS', KEYS[4]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
    return {'lost', ''}
  end
  batch = ARGV[3]
  redis.call('SET', KEYS[3], batch)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', at(now))
if redis.call('ZCARD', KEYS[1]) == 0 or not redis.call('GET', KEYS[2]) then
  redis.call('INCR', KEYS[2])
end
redis.call('ZADD', KEYS[1], at(now + tonumber(ARGV[2])), ARGV[1])
return {redis.call('GET', KEYS[2]), batch}
"""
)

# KEYS: workers, batch. ARGV: worker, lease, batch id.
BEAT = (
    NOW
    + """
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return 'lost' end
redis.call('ZADD', KEYS[1], at(now + tonumber(ARGV[2])), ARGV[1])
return 1
"""
)

# KEYS: job, statuses, workers, run, batch. ARGV: worker, job key, batch id.
CLAIM = (
    NOW
    + """
if redis.call('GET', KEYS[5]) ~= ARGV[3] then return 'lost' end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then
  local alive = redis.call('ZSCORE', KEYS[3], owner)
  if alive and tonumber(alive) > now then return 'busy' end
end
local run = redis.call('GET', KEYS[4])
if run and redis.call('HGET', KEYS[1], 'reported') == run then return 'done' end
if redis.call('EXISTS', KEYS[1]) == 0 then
  if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 'lost' end
  redis.call('HSET', KEYS[1], 'status', 'pending', 'updated', clock[1])
  redis.call('HSET', KEYS[2], ARGV[2], 'pending')
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
return 'claimed'
"""
)

# KEYS: job, statuses, workers, batch. ARGV: worker, job key, batch id, sender, n, n (field,
# value) pairs, fields to delete. Only the worker holding the claim, with its lease alive,
# writes: one that lost it (or stalled past its lease) can never mark a job creating. A job
# marked creating remembers its sender, who alone may record its task late (LAND). The task id
# is the truth: a record that knows it is never marked creating or unknown again (unless the
# same write clears it).
UPDATE = (
    NOW
    + """
if redis.call('GET', KEYS[4]) ~= ARGV[3] then return 'lost' end
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
local alive = redis.call('ZSCORE', KEYS[3], ARGV[1])
if not alive or tonumber(alive) <= now then return 0 end
local n = tonumber(ARGV[5])
local known = redis.call('HEXISTS', KEYS[1], 'task_id') == 1
for i = 6 + 2 * n, #ARGV do
  if ARGV[i] == 'task_id' then known = false end
end
for i = 6, 4 + 2 * n, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  if field ~= 'status' or not (known and (value == 'creating' or value == 'unknown')) then
    redis.call('HSET', KEYS[1], field, value)
    if field == 'status' then redis.call('HSET', KEYS[2], ARGV[2], value) end
    if field == 'status' and value == 'creating' then
      redis.call('HSET', KEYS[1], 'sender', ARGV[4])
    end
  end
end
for i = 6 + 2 * n, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
redis.call('HSET', KEYS[1], 'updated', clock[1])
return 1
"""
)

# KEYS: job, statuses, batch. ARGV: sender, task id, batch id, job key. A createTask answered
# after its worker lost the job's claim: the task exists, so its id is recorded if the record is
# still the one that sender marked creating (creating, or unknown since) and knows no task.
LAND = """
if redis.call('GET', KEYS[3]) ~= ARGV[3] then return 'lost' end
if redis.call('HGET', KEYS[1], 'sender') ~= ARGV[1] then return 'moved' end
local known = redis.call('HGET', KEYS[1], 'task_id')
if known then return known == ARGV[2] and 'landed' or 'moved' end
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'creating' and status ~= 'unknown' then return 'moved' end
redis.call('HSET', KEYS[1], 'status', 'created', 'task_id', ARGV[2])
redis.call('HSET', KEYS[1], 'updated', redis.call('TIME')[1])
redis.call('HDEL', KEYS[1], 'error')
redis.call('HSET', KEYS[2], ARGV[4], 'created')
return 'landed'
"""

# KEYS: job, run. ARGV: worker. The outcome was given: other workers of this run skip the job.
FINISH = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'reported', redis.call('GET', KEYS[2]) or '0')
redis.call('HDEL', KEYS[1], 'owner')
return 1
"""

# KEYS: workers, then jobs. ARGV: worker. A worker leaving lets go of what it did not finish.
LEAVE = """
for i = 2, #KEYS do
  if redis.call('HGET', KEYS[i], 'owner') == ARGV[1] then redis.call('HDEL', KEYS[i], 'owner') end
end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""

# KEYS: job, statuses, workers. ARGV: job key. Only a job no live worker holds.
RELEASE = (
    NOW
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'unknown' and status ~= 'creating' then return 0 end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner then
  local alive = redis.call('ZSCORE', KEYS[3], owner)
  if alive and tonumber(alive) > now then return 0 end
end
redis.call('HSET', KEYS[1], 'status', 'pending')
redis.call('HDEL', KEYS[1], 'error', 'owner', 'reported')
redis.call('HSET', KEYS[2], ARGV[1], 'pending')
return 1
"""
)
