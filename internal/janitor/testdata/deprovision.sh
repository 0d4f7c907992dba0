#!/bin/sh
# A deprovisioner for the dynamic pool tests: it appends the resource's
# name, the id from its user data (read from standard input) and the
# reason to $DYN_DIR/deleted, unless $DYN_DIR/deprovision-fail exists.
set -u
d=$DYN_DIR
if [ -e "$d/deprovision-fail" ]; then
	echo "cannot delete $BERTH_RESOURCE_NAME: in use" >&2
	exit 2
fi
id=$(sed 's/.*"id":"\([0-9]*\)".*/\1/')
echo "$BERTH_RESOURCE_NAME $id $BERTH_DELETE_REASON" >> "$d/deleted"
echo "deleted $BERTH_RESOURCE_NAME"
