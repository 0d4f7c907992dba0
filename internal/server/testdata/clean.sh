#!/bin/sh
# The janitor of the outage test: it notes the resource it cleaned in
# $OUTAGE_DIR/cleaned.
echo "$BERTH_RESOURCE_NAME" >> "$OUTAGE_DIR/cleaned"
echo "wiped $BERTH_RESOURCE_NAME"
