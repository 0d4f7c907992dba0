#!/bin/sh
# A provisioner for the dynamic pool tests. Each run makes resource
# dyn-N (N counts up in $DYN_DIR/count) and prints it as JSON; what the
# files in $DYN_DIR say changes that:
#   provision-fail    print an error and exit 1
#   provision-garbage print something that is not JSON
set -u
d=$DYN_DIR
if [ -e "$d/provision-fail" ]; then
	echo "quota exceeded for $BERTH_RESOURCE_TYPE" >&2
	exit 1
fi
if [ -e "$d/provision-garbage" ]; then
	echo "created it, probably"
	exit 0
fi
# mkdir is atomic: one provisioner at a time takes the next number.
until mkdir "$d/lock" 2>/dev/null; do :; done
n=$(cat "$d/count" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$d/count"
rmdir "$d/lock"
echo "making dyn-$n ($BERTH_PROVISION_ID)" >&2
printf '{"name": "dyn-%s", "userData": {"id": "%s", "provision": "%s"}}\n' "$n" "$n" "$BERTH_PROVISION_ID"
