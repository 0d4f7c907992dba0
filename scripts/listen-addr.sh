# Sourced by the bench scripts. listen_addr LOG PID: waits until the berth
# serve with PID, logging JSON to LOG, says where it listens, and prints
# that address; exits the script if the server dies or takes over 30 s.
listen_addr() {
  local log=$1 pid=$2 addr="" i
  for i in $(seq 3000); do
    addr=$(grep -o '"msg":"listening","addr":"[^"]*"' "$log" | grep -o '127[^"]*' || true)
    [ -n "$addr" ] && { echo "$addr"; return; }
    kill -0 "$pid" 2>/dev/null || { echo "berth serve exited:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.01
  done
  echo "berth serve did not listen within 30 s" >&2
  exit 1
}
