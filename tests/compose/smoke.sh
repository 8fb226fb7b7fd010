#!/usr/bin/env bash
# Compose smoke test: the real image and docker-compose.yml, on this machine's loopback.
#
# Builds the image, starts redis + 2 workers + flower, submits tier 1 n=30 through the
# coordinator service and checks the file (exact rows, no duplicates, written by a non-root
# user), checks Flower's auth, scales the workers to 3, stops 2 of them in the middle of a
# run (their running jobs must go back to the queue: the run ends with exact rows), scales
# back to 2, and tears everything down.
#
# Exit 0: passed. Exit 77: skipped (no Docker engine, or no compose), with the reason on
# the last line. Anything else: failed.
#
# BASE_IMAGE: the image to build on. Unset: farm-base:bookworm when it exists (see
# build-base.sh; built here when debootstrap is available and we are root), else
# python:3.11-slim from a registry.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
here="$repo/tests/compose"
log() { echo "smoke: $*" >&2; }
skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

command -v docker >/dev/null || skip "no docker client on PATH"
info=$(timeout 20 docker info --format '{{.ServerVersion}}' 2>&1) ||
    skip "no Docker engine answers ($(echo "$info" | tail -1))"
if docker compose version >/dev/null 2>&1; then
    compose_bin=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose_bin=(docker-compose)
else
    skip "neither 'docker compose' nor 'docker-compose' is installed"
fi
command -v curl >/dev/null || skip "curl is needed to talk to Flower"
# A Python with PyYAML to adapt the compose file (docker-compose v1 brings one).
yaml_python=""
for py in python3 /usr/bin/python3 /usr/local/bin/python3; do
    if "$py" -c 'import yaml' 2>/dev/null; then yaml_python=$py; break; fi
done
[ -n "$yaml_python" ] || skip "a python3 with PyYAML is needed to adapt the compose file"

if [ -z "${BASE_IMAGE:-}" ]; then
    if docker image inspect farm-base:bookworm >/dev/null 2>&1; then
        BASE_IMAGE=farm-base:bookworm
    elif command -v debootstrap >/dev/null && [ "$(id -u)" = 0 ]; then
        log "building a local base image (debootstrap)"
        BASE_IMAGE=$("$here/build-base.sh" farm-base:bookworm)
    else
        BASE_IMAGE=python:3.11-slim
    fi
fi
log "engine $info, ${compose_bin[*]}, base image $BASE_IMAGE"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
project="farmsmoke$$"
secret() { python3 -c 'import secrets; print(secrets.token_hex(16))'; }
flower_pw=$(secret)
flower_port=$(free_port)
cat >"$work/.env" <<EOF
REDIS_PASSWORD=$(secret)
FLOWER_USER=smoke
FLOWER_PASSWORD=$flower_pw
FARM_IMAGE=farm:smoke
REDIS_IMAGE=$BASE_IMAGE
BASE_IMAGE=$BASE_IMAGE
FARM_CONCURRENCY=2
FARM_SOFT_SHUTDOWN_S=1
SMOKE_REDIS_PORT=$(free_port)
SMOKE_FLOWER_PORT=$flower_port
FLOWER_PORT=$flower_port
EOF
mkdir "$work/data"
if [ "$(id -u)" = 0 ]; then
    chown 10001:10001 "$work/data"
else
    printf 'FARM_UID=%s\nFARM_GID=%s\n' "$(id -u)" "$(id -g)" >>"$work/.env"
fi

# The real compose file with one change: host networking cannot publish ports, so Flower's
# port mapping is dropped (it listens on the host's loopback directly).
"$yaml_python" - "$repo/docker-compose.yml" "$work/docker-compose.yml" <<'PY'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
del config["services"]["flower"]["ports"]
for service in config["services"].values():
    service.pop("build", None)  # built above, with host networking
yaml.safe_dump(config, open(sys.argv[2], "w"), sort_keys=False)
PY
compose() {
    "${compose_bin[@]}" --project-name "$project" --project-directory "$work" \
        --env-file "$work/.env" -f "$work/docker-compose.yml" -f "$here/smoke.override.yml" "$@"
}
cleanup() {
    status=$?
    if [ "$status" != 0 ] && [ "$status" != 77 ]; then
        compose logs --no-color --tail 40 >&2 || true
    fi
    compose down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

log "building the image"
timeout 900 docker build -q --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    -t farm:smoke "$repo" >/dev/null

log "up: redis, 2 workers, flower"
compose up -d --no-build --scale worker=2 redis worker flower >&2

workers() { compose ps -q worker | xargs -r docker inspect -f '{{.State.Running}}' | grep -c true || true; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local until=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$until" ] || fail "timed out waiting for $what"
        sleep 1
    done
}
flower="http://127.0.0.1:$flower_port"
wait_for 120 "flower" curl -fsS "$flower/healthcheck"

# run ARGS...: a command in a one-off coordinator container (no TTY).
run() { compose run --rm -T coordinator "$@"; }
# rows FILE N: the file holds exactly N distinct rows with finite audio.
rows() {
    run python -c '
import sys, h5py, numpy as np
f = h5py.File("/app/data/" + sys.argv[1], "r"); n = int(sys.argv[2])
keys = set(zip(f["metadata/job"][:], f["metadata/preset"][:], f["metadata/midi_note"][:]))
assert f["audio/waveforms"].shape[0] == n and len(keys) == n, (f["audio/waveforms"].shape, len(keys))
assert np.isfinite(f["audio/waveforms"][:]).all()
print("rows", n, "distinct", len(keys))
' "$1" "$2"
}
spec=(--tier 1 --notes 60 --note-duration 0.3 --render-duration 0.5 --seed 5)

log "submit tier 1 n=30 through the coordinator"
run farm submit "${spec[@]}" -n 30 --batch-size 4 -o smoke.h5 --wait >&2
rows smoke.h5 30 >&2
owner=$(stat -c %u "$work/data/smoke.h5")
[ "$owner" != 0 ] || fail "the output was written by root"
for c in $(compose ps -q worker flower) ; do
    uid=$(docker exec "$c" id -u)
    [ "$uid" != 0 ] || fail "container $c runs as root"
done
[ "$(run id -u | tr -d '\r')" != 0 ] || fail "the coordinator runs as root"
for c in $(compose ps -q worker); do
    docker exec "$c" farm health --worker >/dev/null || fail "health check of worker $c failed"
done
docker exec "$(compose ps -q flower)" farm health >/dev/null || fail "health check of flower failed"
log "output rows ok, written by uid $owner; no container runs as root; health checks pass"

log "flower: auth required"
code=$(curl -s -o /dev/null -w '%{http_code}' "$flower/api/workers")
[ "$code" = 401 ] || fail "flower answered $code without credentials"
code=$(curl -s -o /dev/null -w '%{http_code}' -u "smoke:wrong" "$flower/api/workers")
[ "$code" = 401 ] || fail "flower answered $code to a wrong password"
curl -fsS -u "smoke:$flower_pw" "$flower/api/tasks" | grep -q '"farm.render"' ||
    fail "flower lists no farm.render task"
curl -fsS -u "smoke:$flower_pw" "$flower/metrics" | grep -q 'flower_events_total' ||
    fail "flower's /metrics has no events"

log "scale workers to 3"
compose up -d --no-build --scale worker=3 --no-recreate worker >&2
wait_for 60 "3 workers" test "$(workers)" = 3

log "stop 2 workers in the middle of a run (their jobs go back to the queue)"
run farm submit "${spec[@]}" -n 240 --batch-size 16 -o scaled.h5 --detach >&2
sleep 6
mapfile -t victims < <(compose ps -q worker | head -2)
t0=$SECONDS
docker stop -t 60 "${victims[@]}" >/dev/null
log "stopped 2 workers in $((SECONDS - t0)) s (soft shutdown 1 s)"
for v in "${victims[@]}"; do docker logs "$v" >"$work/stopped-$v.log" 2>&1; done
cat "$work"/stopped-*.log >"$work/stopped.log"
grep -qi "soft shutdown" "$work/stopped.log" || fail "no soft shutdown in the stopped workers' logs"
# Cold shutdown after the soft one: "Restoring N unacknowledged message(s)" puts the jobs
# still running (and the prefetched ones) back on the queue.
restored=$(sed -n 's/.*Restoring \([0-9]*\) unacknowledged.*/\1/p' "$work/stopped.log" |
    awk '{s += $1} END {print s + 0}')
log "the stopped workers put $restored unfinished jobs back on the queue"
[ "${SMOKE_SHOW_STOP_LOG:-0}" = 0 ] || tail -40 "$work/stopped.log" >&2
compose up -d --no-build --scale worker=1 --no-recreate worker >&2
[ "$(workers)" = 1 ] || fail "scale-down left $(workers) workers"
log "scale workers back to 2"
compose up -d --no-build --scale worker=2 --no-recreate worker >&2
wait_for 60 "2 workers" test "$(workers)" = 2
wait_for 300 "the scaled run" test -f "$work/data/scaled.h5"
rows scaled.h5 240 >&2
run farm status >&2

log "passed"
