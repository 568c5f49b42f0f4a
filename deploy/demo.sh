#!/usr/bin/env bash
# A local demo: three daemons in a line (alice <- bob <- carol) chat in one room.
# Every step is a real gossipchatd or p2pctl command, as a user would type it.
set -euo pipefail

root=$(mktemp -d /tmp/gossipchat-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT

start() {  # start NAME: run a daemon with its own home, wait for its ready line
  local name=$1 home=$root/$1
  # Loopback only, connected by hand below: no LAN discovery (mDNS) on this machine.
  gossipchatd --home "$home" --listen /ip4/127.0.0.1/tcp/0 --log-level warning --no-mdns \
    >"$root/$name.out" 2>"$root/$name.err" &
  pids+=($!)
  for _ in $(seq 200); do
    grep -q '^gossipchatd ready' "$root/$name.out" 2>/dev/null && break
    sleep 0.05
  done
  grep '^gossipchatd ready' "$root/$name.out" || { cat "$root/$name.err"; exit 1; }
}
addr() { grep -o 'listen=[^ ,]*' "$root/$1.out" | cut -d= -f2; }
web() { grep -o 'web=[^ ]*' "$root/$1.out" | cut -d= -f2; }
ctl() { local name=$1; shift; echo "\$ p2pctl --home $name $*" >&2; p2pctl --home "$root/$name" "$@"; }

start alice; start bob; start carol
echo "web UI: alice $(web alice)  bob $(web bob)  carol $(web carol)"
echo "        (open one logged in with: p2pctl --home $root/alice ui)"
ctl bob connect "$(addr alice)"
ctl carol connect "$(addr bob)"
for who in alice bob carol; do ctl "$who" nick "$who" >/dev/null; ctl "$who" join lobby; done

# Wait until carol's mesh reaches bob, so the first message is not just synced later.
for _ in $(seq 100); do
  p2pctl --home "$root/carol" --json peers | grep -q lobby && break
  sleep 0.1
done

ctl alice send lobby "hello from alice, two hops away from carol"
ctl carol send lobby "hi alice, carol here"
for _ in $(seq 100); do
  [ "$(p2pctl --home "$root/alice" --json history lobby | grep -o '"kind"' | wc -l)" -ge 2 ] && break
  sleep 0.1
done
echo
echo "== carol's history =="
ctl carol history lobby
echo
echo "== alice's history =="
ctl alice history lobby
echo
# Swap an image: alice posts one, carol (two hops away) fetches it by CID.
python - "$root/sunset.png" <<'PY'
import random, sys
from PIL import Image
rng = random.Random(7)
Image.frombytes("RGB", (800, 600), rng.randbytes(800 * 600 * 3)).save(sys.argv[1])
PY
cid=$(ctl alice send lobby --image "$root/sunset.png" a picture for carol | tail -n 1)
mkdir -p "$root/carol-downloads"
(cd "$root/carol-downloads" && ctl carol fetch "$cid" --timeout 30)
if cmp -s "$root/sunset.png" "$root/carol-downloads/sunset.png"; then
  echo "carol's copy of sunset.png is byte for byte alice's ($(wc -c <"$root/sunset.png") bytes)"
else
  echo "image copies differ" >&2; exit 1
fi
echo
ctl carol members lobby
ctl alice status
echo
echo "alice's web UI is at $(web alice); a one-time login URL for it:"
ctl alice ui --url
if [ -n "${DEMO_HOLD:-}" ]; then
  echo "keeping the daemons up for ${DEMO_HOLD} s (DEMO_HOLD): open the URL above"
  sleep "$DEMO_HOLD"
fi
for who in alice bob carol; do ctl "$who" shutdown >/dev/null; done
echo "demo done"
