package berth

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
)

// ResourceEnv describes a resource to a command berth runs for it (the
// command of `berth run`, an exec probe, later a janitor), as environment
// variables: BERTH_RESOURCE_NAME, BERTH_RESOURCE_TYPE, BERTH_USERDATA (the
// user data as a JSON object) and BERTH_USERDATA_<KEY> for each key (see
// EnvName). Keys go in sorted order, so that two keys that name the same
// variable (a-b, a_b) give the same result every time.
func ResourceEnv(name, typ string, userData map[string]string) []string {
	if userData == nil {
		userData = map[string]string{}
	}
	js, _ := json.Marshal(userData) // a map of strings always marshals
	env := []string{"BERTH_RESOURCE_NAME=" + name, "BERTH_RESOURCE_TYPE=" + typ, "BERTH_USERDATA=" + string(js)}
	for _, k := range slices.Sorted(maps.Keys(userData)) {
		env = append(env, "BERTH_USERDATA_"+EnvName(k)+"="+userData[k])
	}
	return env
}

// EnvName is a user-data key as the tail of a variable name: upper case,
// with every character other than an ASCII letter or digit as "_".
func EnvName(key string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, key)
}
