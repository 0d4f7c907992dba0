#!/bin/sh
# The deprovisioner of the end-to-end tests; $1 is the test's directory.
echo "$BERTH_RESOURCE_NAME" >> "$1/deleted"
