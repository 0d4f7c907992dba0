package probe

import (
	"fmt"
	"strings"
	"text/template"
	"text/template/parse"

	"github.com/berth-ci/berth"
)

// field is one templated spec field, parsed once at Compile. Besides the
// template it remembers which user-data keys and labels the template reads,
// so that a resource lacking one gets a plain "has no user data key" error
// instead of text/template's execution trace.
type field struct {
	name     string // the config path, e.g. "probe.tcp.address"
	text     string
	tmpl     *template.Template // nil when text has no actions
	userData []string
	labels   []string
	// check, if set, vets the rendered value ("is it host:port?"): at
	// Compile for a text without actions, else at every render.
	check func(string) error
	// parts, when set, renders the template without text/template: it
	// is text and plain references ({{.UserData.host}}) only, as nearly
	// every probe template is. Executing the template took a tenth of
	// the CPU of probing 10,000 resources.
	parts []part
}

// part is a piece of a plain template: literal text, or a reference to a
// Target field (ref[0] is Name, Type, UserData or Labels; ref[1] the key).
type part struct {
	text string
	ref  []string
}

// plain returns the parts of a template made only of text and plain
// field references, or nil.
func plain(root *parse.ListNode) []part {
	var parts []part
	for _, n := range root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
			parts = append(parts, part{text: string(n.Text)})
		case *parse.ActionNode:
			if len(n.Pipe.Decl) > 0 || len(n.Pipe.Cmds) != 1 || len(n.Pipe.Cmds[0].Args) != 1 {
				return nil
			}
			f, ok := n.Pipe.Cmds[0].Args[0].(*parse.FieldNode)
			if !ok {
				return nil
			}
			switch {
			case len(f.Ident) == 1 && (f.Ident[0] == "Name" || f.Ident[0] == "Type"),
				len(f.Ident) == 2 && (f.Ident[0] == "UserData" || f.Ident[0] == "Labels"):
				parts = append(parts, part{ref: f.Ident})
			default:
				return nil
			}
		default:
			return nil
		}
	}
	return parts
}

// renderPlain is render for a plain template; the keys it reads have been
// checked to exist.
func (f *field) renderPlain(t *Target) string {
	var b strings.Builder
	for _, p := range f.parts {
		switch {
		case p.ref == nil:
			b.WriteString(p.text)
		case p.ref[0] == "Name":
			b.WriteString(t.Name)
		case p.ref[0] == "Type":
			b.WriteString(t.Type)
		case p.ref[0] == "UserData":
			b.WriteString(t.UserData[p.ref[1]])
		default:
			b.WriteString(t.Labels[p.ref[1]])
		}
	}
	return b.String()
}

// parseField parses text as the template of the named field. Only .Name,
// .Type, .UserData.KEY and .Labels.KEY exist; any other field is an error
// now rather than at the first probe. check may be nil.
func parseField(name, text string, check func(string) error) (*field, error) {
	f := &field{name: name, text: text, check: check}
	if !strings.Contains(text, "{{") {
		if check != nil {
			if err := check(text); err != nil {
				return nil, berth.FieldErrorf(name, "%v", err)
			}
		}
		return f, nil
	}
	tmpl, err := template.New(name).Option("missingkey=error").Parse(text)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "template: "+name+":")
		return nil, berth.FieldErrorf(name, "invalid template %q: line %s", text, msg)
	}
	if err := f.walk(tmpl.Root, true); err != nil {
		return nil, berth.FieldErrorf(name, "template %q: %v", text, err)
	}
	f.tmpl = tmpl
	f.parts = plain(tmpl.Root)
	return f, nil
}

// walk collects the target fields the template reads. dot says whether "."
// is still the Target: inside with and range it is not, and fields there
// are left to execution.
func (f *field) walk(n parse.Node, dot bool) error {
	var errs []error
	visit := func(n parse.Node, dot bool) {
		if err := f.walk(n, dot); err != nil {
			errs = append(errs, err)
		}
	}
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			visit(c, dot)
		}
	case *parse.ActionNode:
		visit(n.Pipe, dot)
	case *parse.PipeNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Cmds {
			visit(c, dot)
		}
	case *parse.CommandNode:
		for _, a := range n.Args {
			visit(a, dot)
		}
	case *parse.FieldNode:
		if dot {
			return f.ref(n.Ident)
		}
	case *parse.VariableNode:
		// $ is the Target wherever it is used.
		if n.Ident[0] == "$" && len(n.Ident) > 1 {
			return f.ref(n.Ident[1:])
		}
	case *parse.IfNode:
		visit(n.Pipe, dot)
		visit(n.List, dot)
		visit(n.ElseList, dot)
	case *parse.WithNode:
		visit(n.Pipe, dot)
		visit(n.List, false)
		visit(n.ElseList, dot)
	case *parse.RangeNode:
		visit(n.Pipe, dot)
		visit(n.List, false)
		visit(n.ElseList, dot)
	case *parse.TemplateNode:
		visit(n.Pipe, dot)
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

func (f *field) ref(ident []string) error {
	switch ident[0] {
	case "Name", "Type":
	case "UserData":
		if len(ident) > 1 {
			f.userData = append(f.userData, ident[1])
		}
	case "Labels":
		if len(ident) > 1 {
			f.labels = append(f.labels, ident[1])
		}
	default:
		return fmt.Errorf("unknown field .%s (a template can use .Name, .Type, .UserData.KEY and .Labels.KEY)", ident[0])
	}
	return nil
}

// render executes the template with t and checks the result. Its errors
// are *berth.Error naming the field.
func (f *field) render(t *Target) (string, error) {
	if f.tmpl == nil {
		return f.text, nil // checked by parseField
	}
	for _, k := range f.userData {
		if _, ok := t.UserData[k]; !ok {
			return "", berth.FieldErrorf(f.name, "resource %s has no user data key %q", t.Name, k)
		}
	}
	for _, k := range f.labels {
		if _, ok := t.Labels[k]; !ok {
			return "", berth.FieldErrorf(f.name, "resource %s has no label %q", t.Name, k)
		}
	}
	if f.parts != nil {
		out := f.renderPlain(t)
		if f.check != nil {
			if err := f.check(out); err != nil {
				return "", berth.FieldErrorf(f.name, "resource %s: %v", t.Name, err)
			}
		}
		return out, nil
	}
	var b strings.Builder
	if err := f.tmpl.Execute(&b, t); err != nil {
		// Drop text/template's "template: NAME:1:2: executing "NAME" at"
		// preamble: the field name says it already.
		msg := err.Error()
		if i := strings.Index(msg, " at <"); i >= 0 {
			msg = msg[i+len(" at "):]
		}
		return "", berth.FieldErrorf(f.name, "resource %s: %s", t.Name, msg)
	}
	if f.check != nil {
		if err := f.check(b.String()); err != nil {
			return "", berth.FieldErrorf(f.name, "resource %s: %v", t.Name, err)
		}
	}
	return b.String(), nil
}
