package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/berth-ci/berth"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 1 << 20

// DefaultBodyReadTimeout bounds how long reading a request body may take.
const DefaultBodyReadTimeout = 30 * time.Second

// decodeJSON reads exactly one JSON object into v, rejecting unknown
// fields, trailing data and bodies over MaxBodyBytes, with errors that name
// the field at fault. An empty body decodes as {} when allowEmpty.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool, timeout time.Duration) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return &berth.Error{Code: berth.EInvalid, Field: "Content-Type", Message: fmt.Sprintf("must be application/json, not %q", ct)}
		}
	}
	// A body must arrive promptly; a client that promises more than it
	// sends must not hold the connection. (Not http.Server.ReadTimeout: that
	// would also cut long polls, which legitimately outlast it.)
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(timeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		// Leave the deadline in place and close the connection after the
		// answer: net/http would otherwise wait, with no deadline, for
		// the rest of a body that is not coming before it answers.
		w.Header().Set("Connection", "close")
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return berth.Errorf(berth.EInvalid, "request body did not arrive within %s", timeout)
		}
		return jsonError(err)
	}
	_ = rc.SetReadDeadline(time.Time{})
	if len(bytes.TrimSpace(body)) == 0 {
		if allowEmpty {
			return nil
		}
		return berth.Errorf(berth.EInvalid, "request body is empty; want a JSON object")
	}
	// encoding/json would quietly turn invalid UTF-8 into U+FFFD, so that
	// an owner or reason would be stored as something nobody sent.
	if !utf8.Valid(body) {
		return berth.Errorf(berth.EInvalid, "request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return berth.Errorf(berth.EInvalid, "request body has data after the JSON object")
	}
	return checkKeys(body, jsonFields(v))
}

// checkKeys walks the top-level keys of a JSON object that has already
// decoded. encoding/json matches field names regardless of case and lets a
// repeated key silently win; berth's names are exact, so "TYPE" is as
// unknown as "colour", and a key given twice is refused rather than
// guessed at.
func checkKeys(body []byte, known map[string]bool) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil { // the opening brace
		return nil
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		k, _ := tok.(string)
		if !known[k] {
			return berth.FieldErrorf(k, "is not a known field (field names are case-sensitive)")
		}
		if seen[k] {
			return berth.FieldErrorf(k, "is given more than once")
		}
		seen[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return nil
}

// jsonFields returns the JSON names of the fields of the struct v points to.
func jsonFields(v any) map[string]bool {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	out := map[string]bool{}
	if t.Kind() != reflect.Struct {
		return out
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = true
	}
	return out
}

func jsonError(err error) error {
	var (
		mbe    *http.MaxBytesError
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return berth.Errorf(berth.ETooLarge, "request body is larger than %d bytes", mbe.Limit)
	case errors.As(err, &syntax):
		return berth.Errorf(berth.EInvalid, "request body is not valid JSON (at byte %d): %v", syntax.Offset, syntax)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return berth.Errorf(berth.EInvalid, "request body must be a JSON object, not %s", typ.Value)
		}
		return berth.FieldErrorf(field, "must be %s, not %s", jsonKind(typ.Type.Kind().String()), typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return berth.Errorf(berth.EInvalid, "request body is truncated JSON")
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		name, _ := strconv.Unquote(f)
		return berth.FieldErrorf(name, "is not a known field")
	}
	// Errors from our own UnmarshalJSON methods (durations) come wrapped
	// without the field; say what we can.
	return berth.Errorf(berth.EInvalid, "request body: %s", strings.TrimPrefix(msg, "json: "))
}

func jsonKind(k string) string {
	switch k {
	case "int", "int64", "int32":
		return "an integer"
	case "string":
		return "a string"
	case "map":
		return "an object"
	case "struct":
		return "an object"
	case "bool":
		return "true or false"
	case "slice":
		return "an array"
	}
	return k
}

// query reads URL query parameters, rejecting unknown and repeated ones.
type query struct {
	vals map[string][]string
	err  error
}

func newQuery(r *http.Request, allowed ...string) *query {
	vals, err := url.ParseQuery(r.URL.RawQuery)
	q := &query{vals: vals}
	if err != nil {
		// r.URL.Query() would drop the broken part silently, and with it
		// a filter the caller meant to apply.
		q.err = berth.Errorf(berth.EInvalid, "query string is malformed: %v", err)
		return q
	}
	ok := map[string]bool{}
	for _, a := range allowed {
		ok[a] = true
	}
	for k, v := range q.vals {
		if !ok[k] {
			if len(allowed) == 0 {
				q.err = berth.FieldErrorf(k, "is not a known query parameter (this endpoint takes none)")
			} else {
				q.err = berth.FieldErrorf(k, "is not a known query parameter (known: %s)", strings.Join(allowed, ", "))
			}
			return q
		}
		if len(v) > 1 {
			q.err = berth.FieldErrorf(k, "is given %d times", len(v))
			return q
		}
	}
	return q
}

func (q *query) str(name string) string {
	if v := q.vals[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (q *query) int(name string, def, lo, hi int) int {
	s := q.str(name)
	if s == "" || q.err != nil {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		q.err = berth.FieldErrorf(name, "must be an integer from %d to %d, not %q", lo, hi, s)
		return def
	}
	return n
}

func (q *query) int64(name string) int64 {
	s := q.str(name)
	if s == "" || q.err != nil {
		return 0
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		q.err = berth.FieldErrorf(name, "must be a non-negative integer, not %q", s)
		return 0
	}
	return n
}

func (q *query) time(name string) time.Time {
	s := q.str(name)
	if s == "" || q.err != nil {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		q.err = berth.FieldErrorf(name, "must be an RFC 3339 time such as 2026-01-02T15:04:05Z, not %q", s)
	}
	return t
}

func (q *query) duration(name string, max time.Duration) time.Duration {
	s := q.str(name)
	if s == "" || q.err != nil {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > max {
		q.err = berth.FieldErrorf(name, "must be a duration from 0s to %s such as \"30s\", not %q", max, s)
	}
	return d
}

func (q *query) name(name string) string {
	s := q.str(name)
	if s != "" && q.err == nil && !berth.ValidName(s) {
		q.err = berth.FieldErrorf(name, "is not a valid name: %q", s)
	}
	return s
}
