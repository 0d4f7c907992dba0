#!/bin/sh
# The janitor of the end-to-end tests; $1 is the test's directory. It
# notes "BERTH_PID RESOURCE ATTEMPT" in $1/janitor.log (berth runs it under
# a supervising shell, so berth is its parent's parent). While $1/block
# exists it starts a child that would run for an hour, writes the child's
# pid to $1/blocked and waits for it; while $1/fail exists it fails.
set -u
d=$1
berth=$(awk '{print $4}' "/proc/$PPID/stat")
echo "$berth $BERTH_RESOURCE_NAME $BERTH_CLEAN_ATTEMPT" >> "$d/janitor.log"
if [ -e "$d/block" ]; then
	sleep 3600 &
	echo $! > "$d/blocked"
	wait
fi
if [ -e "$d/fail" ]; then
	echo "cannot wipe $BERTH_RESOURCE_NAME" >&2
	exit 1
fi
echo "wiped $BERTH_RESOURCE_NAME"
echo "checked $BERTH_USERDATA"
