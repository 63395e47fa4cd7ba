"""wrk, driven for the front door (``bench/front_door.py``): one Lua script for every
row, which builds each request itself (a buyer's token in turn, a key never sent
before), reads every answer's status and error ``code``, and keeps a timeline.

Every run sends for ``seconds`` (or until ``count`` requests are sent, whichever
comes first) and then waits for the answer to every request it sent, so that each
request the server worked on is counted (wrk's own ``-d`` drops the ones in flight when
it ends, hundreds at 256 connections, and the CPU per answer would be overstated).
wrk only knows durations, so the script does it: once a thread is done sending, a
connection that asks for another request gets a *parked* one (a POST whose body never
comes, to a path outside the API: the server waits for the body and does no work). A
thread with all its answers writes a marker file and stops; when every thread has, this
module sends wrk SIGINT (its documented way to end early) and wrk prints its summary.
wrk's ``-d`` is only a cap (``seconds`` + ``timeout_s``), never reached in a good run.

Times come from ``clock_gettime(CLOCK_MONOTONIC)`` through LuaJIT's FFI (wrk's Lua is
LuaJIT), the clock ``time.monotonic()`` reads, so the timeline lines up with the
orchestrator's. Rates are answers over the span from the first request sent to the
last answer read, not wrk's own ``Requests/sec`` (which includes its start-up and,
in count mode, the wait for the signal); both are kept.

Latency percentiles are wrk's (``--latency``); note that wrk backfills its histogram
for coordinated omission (``stats_correct``), as it always does.
"""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Everything a row varies is in the CONFIG block Python writes at the top.
LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } door_timespec;
int clock_gettime(int clk_id, door_timespec *tp);
]]
local ts = ffi.new("door_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

-- Globals, not locals: setup() sets thread_id through thread:set and done() reads
-- the rest through thread:get.
threads = {}
thread_id = 0
sent = 0
answered = 0
parked = 0
park_answers = 0
first_sent = 0
last_answer = 0
tally = {}
series = {}
quota = 0
finished = 0
closing = false
local verifying = false
local park = nil
local static = nil

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

function init(args)
  -- wrk builds one request on the first thread to check it, and never sends it.
  verifying = (thread_id == 1)
  if count > 0 then
    if thread_id <= count then
      quota = math.floor((count - thread_id) / nthreads) + 1
    else
      quota = 0
    end
  end
  if count > 0 and quota == 0 then closing = true end
  park = "POST /bench-door-park/ HTTP/1.1\r\nHost: " .. wrk.headers["Host"] ..
         "\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n"
  if mode == "get" then static = wrk.format("GET", path) end
end

-- The n-th request of this thread; g numbers requests across all threads.
local function build(n)
  local g = (n - 1) * nthreads + (thread_id - 1)
  if mode == "get" then return static end
  if mode == "token" then
    local user = users[g % #users + 1]
    local body = '{"username": "' .. user .. '", "password": "' .. password .. '"}'
    return wrk.format("POST", path, {["Content-Type"] = "application/json"}, body)
  end
  local token, key
  if mode == "spike" then
    -- Attempt g of the plan: a buyer and that buyer's n-th attempt; one key each.
    local buyer, round = plan_buyer[g + 1], plan_round[g + 1]
    token = tokens[buyer + 1]
    key = nonce .. "-" .. buyer .. "-" .. round
  else
    token = tokens[g % #tokens + 1]
    key = nonce .. "-" .. g
  end
  return wrk.format("POST", path, {
    ["Authorization"] = "Token " .. token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = key,
  }, '{"quantity": 1}')
end

-- Stop sending once this thread's share is sent or its time is up; then every
-- connection that asks for another request is parked, and the thread ends when each
-- request it sent has its answer.
local function time_up(t)
  if count > 0 and sent >= quota then return true end
  return duration > 0 and first_sent > 0 and t - first_sent >= duration
end

local function maybe_finish()
  if closing and finished == 0 and answered >= sent then
    finished = 1
    local f = io.open(done_dir .. "/thread-" .. thread_id, "w")
    f:write(tostring(answered))
    f:close()
    wrk.thread:stop()
  end
end

function request()
  if verifying then
    verifying = false
    return build(sent + 1)
  end
  local t = now()
  if closing or time_up(t) then
    closing = true
    parked = parked + 1
    maybe_finish()
    return park
  end
  sent = sent + 1
  if first_sent == 0 then first_sent = t end
  return build(sent)
end

function response(status, headers, body)
  local t = now()
  if parked > 0 and status == 404 then
    -- Only the parked request's path answers 404 here (it never should: no body comes).
    park_answers = park_answers + 1
    return
  end
  answered = answered + 1
  last_answer = t
  local code = ""
  if status >= 300 and body then
    code = string.match(body, '"code"%s*:%s*"([^"]*)"') or ""
  end
  local key = status .. " " .. code
  tally[key] = (tally[key] or 0) + 1
  local b = math.floor(t / bucket) * 1000 + status
  series[b] = (series[b] or 0) + 1
  if not closing and time_up(t) then closing = true end
  maybe_finish()
end

local function jstr(s) return '"' .. string.gsub(s, '[%c"\\]', '') .. '"' end

function done(summary, latency, requests)
  local parts = {}
  local function put(name, value) table.insert(parts, jstr(name) .. ": " .. value) end
  local sums = {sent = 0, answered = 0, parked = 0, park_answers = 0}
  local t0, t1 = nil, nil
  local tallies, buckets = {}, {}
  for _, thread in ipairs(threads) do
    for name, _ in pairs(sums) do sums[name] = sums[name] + thread:get(name) end
    local f, l = thread:get("first_sent"), thread:get("last_answer")
    if f > 0 and (t0 == nil or f < t0) then t0 = f end
    if l > 0 and (t1 == nil or l > t1) then t1 = l end
    for k, n in pairs(thread:get("tally")) do tallies[k] = (tallies[k] or 0) + n end
    for k, n in pairs(thread:get("series")) do buckets[k] = (buckets[k] or 0) + n end
  end
  for name, value in pairs(sums) do put(name, value) end
  put("first_sent", string.format("%.6f", t0 or 0))
  put("last_answer", string.format("%.6f", t1 or 0))
  local items = {}
  for k, n in pairs(tallies) do table.insert(items, jstr(k) .. ": " .. n) end
  put("answers", "{" .. table.concat(items, ", ") .. "}")
  items = {}
  for k, n in pairs(buckets) do table.insert(items, '"' .. string.format("%d", k) .. '": ' .. n) end
  put("series", "{" .. table.concat(items, ", ") .. "}")
  items = {}
  for _, p in ipairs({50, 75, 90, 99, 99.9}) do
    table.insert(items, '"' .. p .. '": ' .. latency:percentile(p))
  end
  put("latency_us", "{" .. table.concat(items, ", ") .. "}")
  put("latency_mean_us", string.format("%.1f", latency.mean))
  put("latency_max_us", latency.max)
  put("wrk_requests", summary.requests)
  put("wrk_duration_us", summary.duration)
  local e = summary.errors
  put("socket_errors", string.format('{"connect": %d, "read": %d, "write": %d, "timeout": %d}',
      e.connect, e.read, e.write, e.timeout))
  local f = io.open(out_path, "w")
  f:write("{" .. table.concat(parts, ", ") .. "}\n")
  f:close()
end
"""

BUCKET_S = 0.1


def _lua_value(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid Lua string for our values
    if isinstance(value, list):
        # Long lists on many lines: Lua reads them faster than one endless line.
        return "{" + ",\n".join(_lua_value(v) for v in value) + "}"
    return repr(value)


@dataclass
class Load:
    """What wrk sends: ``mode`` is ``reserve`` (tokens in turn, a fresh key each),
    ``spike`` (attempt g is ``plan[g]``: a buyer index and that buyer's attempt
    number), ``get`` or ``token``."""

    path: str
    mode: str = "reserve"
    tokens: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    password: str = ""
    nonce: str = ""
    plan: list[tuple[int, int]] = field(default_factory=list)


def wrk_path() -> str | None:
    return shutil.which("wrk")


def run(
    url: str,
    load: Load,
    *,
    threads: int,
    connections: int,
    seconds: float,
    count: int = 0,
    timeout_s: float = 30,
) -> dict:
    """One wrk run: send for ``seconds`` (or ``count`` requests, if sooner), then wait
    for every answer (each at most ``timeout_s``)."""
    work = Path(tempfile.mkdtemp(prefix="door-wrk-"))
    done_dir = work / "done"
    done_dir.mkdir()
    out_path = work / "out.json"
    config = {
        "mode": load.mode,
        "path": load.path,
        "tokens": load.tokens,
        "users": load.users,
        "password": load.password,
        "nonce": load.nonce or f"door{time.time_ns()}",
        "plan_buyer": [b for b, _ in load.plan],
        "plan_round": [r for _, r in load.plan],
        "count": count,
        "duration": float(seconds),
        "nthreads": threads,
        "bucket": BUCKET_S,
        "done_dir": str(done_dir),
        "out_path": str(out_path),
    }
    script = work / "door.lua"
    script.write_text("\n".join(f"{k} = {_lua_value(v)}" for k, v in config.items()) + "\n" + LUA)
    cap = seconds + timeout_s + 5
    args = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(cap))}s",
        "--timeout",
        f"{max(1, round(timeout_s))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    signalled = False
    try:
        wanted = min(threads, count) if count else threads
        while process.poll() is None:
            if len(list(done_dir.iterdir())) >= wanted:
                process.send_signal(signal.SIGINT)
                signalled = True
                break
            time.sleep(0.005)
        stdout, stderr = process.communicate(timeout=cap + 60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.monotonic() - started
    if process.returncode not in (0, -signal.SIGINT) or not out_path.exists():
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr[-2000:]}{stdout[-2000:]}")
    result = json.loads(out_path.read_text())
    shutil.rmtree(work, ignore_errors=True)
    span = result["last_answer"] - result["first_sent"]
    series: dict[int, dict[int, int]] = {}
    for key, n in result.pop("series").items():
        bucket, status = divmod(int(key), 1000)
        series.setdefault(bucket, {})[status] = n
    statuses: dict[int, int] = {}
    for key, n in result["answers"].items():
        status = int(key.split(" ", 1)[0])
        statuses[status] = statuses.get(status, 0) + n
    return {
        **result,
        "url": url,
        "mode": load.mode,
        "threads": threads,
        "connections": connections,
        "seconds_asked": seconds,
        "count_asked": count,
        # False: wrk's cap ended it with requests unanswered.
        "drained": signalled,
        "span_s": round(span, 4),
        "rate": round(result["answered"] / span, 1) if span > 0 else None,
        "wrk_wall_s": round(wall, 3),
        "wrk_cpu_s": round(
            (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 3
        ),
        "statuses": statuses,
        # {bucket start (monotonic s): {status: answers}}
        "timeline": {
            round(bucket * BUCKET_S, 1): by_status for bucket, by_status in sorted(series.items())
        },
        "p50_ms": result["latency_us"]["50"] / 1000,
        "p90_ms": result["latency_us"]["90"] / 1000,
        "p99_ms": result["latency_us"]["99"] / 1000,
        "mean_ms": float(result["latency_mean_us"]) / 1000,
        "wrk_stdout": stdout,
    }
