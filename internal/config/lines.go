package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// nodeIndex remembers where each field of the document is, so problems
// found after decoding can name a line.
type nodeIndex struct {
	byPath map[string]int      // path → line of its key (or item)
	byLine map[int][]lineEntry // line → keys and values on it
}

type lineEntry struct {
	path  string
	key   string // the mapping key on this line, if any
	isKey bool
	// value is the scalar at path, when this entry is one: several
	// fields of a flow mapping ({command: [x], timeout: 30}) share a
	// line, and a decoding error names the value, not the field.
	value  string
	scalar bool
}

func indexNodes(root *yaml.Node) *nodeIndex {
	idx := &nodeIndex{byPath: map[string]int{}, byLine: map[int][]lineEntry{}}
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	idx.walk(n, "")
	return idx
}

func (idx *nodeIndex) walk(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			idx.byPath[p] = k.Line
			idx.byLine[k.Line] = append(idx.byLine[k.Line], lineEntry{path: p, key: k.Value, isKey: true})
			idx.byLine[v.Line] = append(idx.byLine[v.Line], lineEntry{path: p, value: v.Value, scalar: v.Kind == yaml.ScalarNode})
			idx.walk(v, p)
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			idx.byPath[p] = item.Line
			idx.byLine[item.Line] = append(idx.byLine[item.Line], lineEntry{path: p, value: item.Value, scalar: item.Kind == yaml.ScalarNode})
			idx.walk(item, p)
		}
	}
}

// lineOf returns the line of path, or of its nearest ancestor.
func (idx *nodeIndex) lineOf(path string) int {
	for p := path; p != ""; p = parent(p) {
		if l, ok := idx.byPath[p]; ok {
			return l
		}
	}
	return 0
}

func parent(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i <= 0 {
		return ""
	}
	return p[:i]
}

var (
	unknownFieldRe = regexp.MustCompile(`^line (\d+): field (\S+) not found in type \S+$`)
	cannotRe       = regexp.MustCompile("^line (\\d+): cannot unmarshal (\\S+)(?: `(.*)`)? into (\\S+)$")
	lineMsgRe      = regexp.MustCompile(`^line (\d+): (.*)$`)
)

// typeProblem turns one of yaml.TypeError's messages into a Problem with
// the path of the field at that line.
func (idx *nodeIndex) typeProblem(msg string) Problem {
	if m := unknownFieldRe.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		for _, e := range idx.byLine[line] {
			if e.isKey && e.key == m[2] {
				msg := "unknown field"
				if later, ok := notYet[m[2]]; ok {
					msg = later
				}
				return Problem{Path: e.path, Line: line, Message: msg}
			}
		}
		return Problem{Line: line, Message: fmt.Sprintf("unknown field %q", m[2])}
	}
	if m := cannotRe.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		if m[4] == "config.Config" {
			return Problem{Line: line, Message: "the document must be a mapping with a pools list"}
		}
		what := tagName(m[2])
		if m[3] != "" {
			what += fmt.Sprintf(" %q", m[3])
		}
		path := idx.deepestAt(line)
		if m[3] != "" {
			if p, ok := idx.valueAt(line, m[3]); ok {
				path = p
			}
		}
		return Problem{Path: path, Line: line, Message: fmt.Sprintf("cannot use %s as %s", what, goTypeName(m[4]))}
	}
	if m := lineMsgRe.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Problem{Path: idx.deepestAt(line), Line: line, Message: m[2]}
	}
	return Problem{Message: msg}
}

// valueAt returns the field on line whose value is the scalar value, if
// exactly one is.
func (idx *nodeIndex) valueAt(line int, value string) (string, bool) {
	found := ""
	for _, e := range idx.byLine[line] {
		if e.scalar && e.value == value {
			if found != "" && found != e.path {
				return "", false
			}
			found = e.path
		}
	}
	return found, found != ""
}

// deepestAt returns the most specific field on a line: the deepest key if
// the line has one (so "k: [1]" names k, not k[0]), else the deepest item.
func (idx *nodeIndex) deepestAt(line int) string {
	best, bestKey := "", ""
	for _, e := range idx.byLine[line] {
		if len(e.path) > len(best) {
			best = e.path
		}
		if e.isKey && len(e.path) > len(bestKey) {
			bestKey = e.path
		}
	}
	if bestKey != "" {
		return bestKey
	}
	return best
}

// notYet names DESIGN.md config fields that this version does not act on
// yet: better a clear refusal than a config that silently does less.
// (None today: issue 5 brought janitors, the last of them.)
var notYet = map[string]string{}

func tagName(tag string) string {
	switch tag {
	case "!!str":
		return "the string"
	case "!!int", "!!float":
		return "the number"
	case "!!bool":
		return "the boolean"
	case "!!seq":
		return "a list"
	case "!!map":
		return "a mapping"
	}
	return tag
}

func goTypeName(t string) string {
	switch {
	case t == "time.Duration":
		return "a duration (such as 10m or 90s)"
	case t == "int":
		return "a whole number"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a string"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map") || strings.HasPrefix(t, "config."):
		return "a mapping"
	}
	return t
}
