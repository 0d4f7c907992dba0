#!/bin/sh
# The janitor of the end-to-end tests; $1 is the test's directory. It
# notes "BERTH_PID RESOURCE ATTEMPT" in $1/janitor.log ($PPID is the berth
# process that runs it). While $1/block exists it writes its own pid to
# $1/blocked and waits to be killed; while $1/fail exists it fails.
set -u
d=$1
echo "$PPID $BERTH_RESOURCE_NAME $BERTH_CLEAN_ATTEMPT" >> "$d/janitor.log"
if [ -e "$d/block" ]; then
	echo $$ > "$d/blocked"
	exec sleep 3600
fi
if [ -e "$d/fail" ]; then
	echo "cannot wipe $BERTH_RESOURCE_NAME" >&2
	exit 1
fi
echo "wiped $BERTH_RESOURCE_NAME"
echo "checked $BERTH_USERDATA"
