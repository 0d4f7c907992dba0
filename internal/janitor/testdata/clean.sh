#!/bin/sh
# A janitor for the janitor tests. It records what it was given in
# $JANITOR_DIR/ran.<resource>.<attempt> (its environment's BERTH_ lines,
# then its standard input), and then does what the files in $JANITOR_DIR
# say:
#   fail          print to both outputs and exit 3
#   block         write "<resource> <pid>" to the fifo "started" (the
#                 test reads it) and wait until killed
# Otherwise it prints a line and exits 0.
set -u
d=$JANITOR_DIR
rec="$d/ran.$BERTH_RESOURCE_NAME.$BERTH_CLEAN_ATTEMPT"
env | grep '^BERTH_' | sort > "$rec"
echo "--- stdin" >> "$rec"
cat >> "$rec"
if [ -e "$d/block" ]; then
	echo "$BERTH_RESOURCE_NAME $$" > "$d/started"
	exec sleep 3600
fi
if [ -e "$d/fail" ]; then
	echo "wiping $BERTH_RESOURCE_NAME"
	echo "rm: cannot remove /data: device busy" >&2
	exit 3
fi
echo "cleaned $BERTH_RESOURCE_NAME (deep: $BERTH_CLEAN_DEEP)"
