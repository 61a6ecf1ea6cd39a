package main

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The configuration is decoded by walking the YAML node tree against
// Config's yaml tags instead of by yaml.Decoder, so that every problem
// names the key, the line and the value the operator wrote, all problems
// are reported at once, and flags go through the very same value parser
// as the file (a duration, a port list or a number means the same in both).
//
// Kinds of field and what they accept:
//   - string: any scalar, taken as written.
//   - time.Duration: "30s", "5m", "1h30m"; a bare 0; never another bare
//     number (its unit would be a guess).
//   - int, int64: a whole number.
//   - uint16: a port, 1-65535.
//   - bool: true or false.
//   - a list of scalars: a YAML list, or one scalar holding a
//     comma-separated list ("1755, 8755"), as the flags take it.
//   - a list of mappings, a mapping: keys by yaml tag; unknown keys are
//     errors with the closest known key suggested.

// configError is one problem with one setting, located where the operator
// wrote it.
type configError struct {
	// Where is "FILE:LINE", "-flag" or "" for a built-in default.
	Where string
	// Key is the setting's path ("rules.deny[0].network"); empty for
	// problems that are not about one setting.
	Key string
	Msg string
}

func (e configError) Error() string {
	var b strings.Builder
	if e.Where != "" {
		b.WriteString(e.Where + ": ")
	}
	if e.Key != "" && !strings.HasPrefix(e.Where, "-") { // a flag names its key already
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// configErrors is every problem found; it is an error when not empty.
type configErrors []configError

func (es configErrors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// sort orders the problems as an operator reads them: the file's by line,
// then the flags', then the rest.
func (es configErrors) sort() {
	rank := func(e configError) (int, int) {
		if i := strings.LastIndexByte(e.Where, ':'); i > 0 {
			if line, err := strconv.Atoi(e.Where[i+1:]); err == nil {
				return 0, line
			}
		}
		if strings.HasPrefix(e.Where, "-") {
			return 1, 0
		}
		return 2, 0
	}
	slices.SortStableFunc(es, func(a, b configError) int {
		ga, la := rank(a)
		gb, lb := rank(b)
		if ga != gb {
			return ga - gb
		}
		return la - lb
	})
}

// origins maps a setting's path to where its value came from ("FILE:LINE"
// or "-flag"); settings absent from it have their default.
type origins map[string]string

// of returns where key, or the nearest enclosing key written, came from:
// a rule without a network is located by the rule.
func (o origins) of(key string) string {
	for key != "" {
		if w, ok := o[key]; ok {
			return w
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return ""
}

// maxConfigValues bounds the values one file may decode to. Aliases are
// followed, so a small file of aliases to aliases could otherwise expand
// to billions; a real configuration has a few hundred.
const maxConfigValues = 100_000

// decoder decodes one source (the file or a flag) into a Config.
type decoder struct {
	file   string // for "FILE:LINE"
	errs   configErrors
	origin origins
	values int // decoded so far, against maxConfigValues
}

func (d *decoder) at(n *yaml.Node) string { return fmt.Sprintf("%s:%d", d.file, n.Line) }

func (d *decoder) fail(n *yaml.Node, key, format string, args ...any) {
	d.errs = append(d.errs, configError{Where: d.at(n), Key: key, Msg: fmt.Sprintf(format, args...)})
}

// yamlLine finds "line N" in a yaml.v3 syntax error.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// decodeYAML overlays the YAML document data on cfg. file names the file
// in messages. It returns every problem found; cfg holds whatever decoded.
func decodeYAML(file string, data []byte, cfg *Config, origin origins) configErrors {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return configErrors{syntaxError(file, data, err)}
	}
	if len(doc.Content) == 0 { // empty file: nothing to overlay
		return nil
	}
	d := &decoder{file: file, origin: origin}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil
	}
	d.value(root, reflect.ValueOf(cfg).Elem(), "")
	return d.errs
}

// syntaxError locates a YAML syntax error. yaml.v3 counts lines from 1 in
// scanner errors but from 0 in parser errors, and leaves the line out when
// it counts 0; parsing again one line down finds that one.
func syntaxError(file string, data []byte, err error) configError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line, shifted := 0, false
	m := yamlLine.FindStringSubmatch(err.Error())
	if m == nil {
		var n yaml.Node
		if err2 := yaml.Unmarshal(append([]byte("\n"), data...), &n); err2 != nil {
			m, shifted = yamlLine.FindStringSubmatch(err2.Error()), true
		}
	} else {
		msg = err.Error()[len(m[0]):]
	}
	if m != nil {
		line, _ = strconv.Atoi(m[1])
		if isParserError(msg) {
			line++
		}
		if shifted {
			line--
		}
	}
	where := file
	if line > 0 {
		where = fmt.Sprintf("%s:%d", file, line)
	}
	return configError{Where: where, Msg: "YAML syntax error: " + msg}
}

// isParserError tells yaml.v3's parser errors (lines counted from 0) from
// its scanner errors (from 1).
func isParserError(msg string) bool {
	for _, p := range []string{"node content", "key", "',' or ']'", "',' or '}'", "'-' indicator", "<document start>"} {
		if strings.HasPrefix(msg, "did not find expected "+p) {
			return true
		}
	}
	return false
}

var durationType = reflect.TypeFor[time.Duration]()

// value decodes n into v; key is v's path.
func (d *decoder) value(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if !d.spend(n) {
		return
	}
	if key != "" {
		d.origin[key] = d.at(n)
	}
	switch {
	case v.Kind() == reflect.Struct:
		d.mapping(n, v, key)
	case v.Kind() == reflect.Slice:
		d.list(n, v, key)
	case n.Kind != yaml.ScalarNode:
		d.fail(n, key, "want a single value, not a %s", kindName(n))
	case n.Tag == "!!null":
		v.SetZero()
	default:
		if msg := setScalar(v, n.Value); msg != "" {
			d.fail(n, key, "%s", msg)
		}
	}
}

// spend counts one more value against maxConfigValues and reports
// whether decoding may go on; the first value past the budget is the one
// error about it.
func (d *decoder) spend(n *yaml.Node) bool {
	d.values++
	if d.values == maxConfigValues {
		d.fail(n, "", "the file expands to more than %d values (aliases used many times?)", maxConfigValues)
	}
	return d.values < maxConfigValues
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "rules:" with nothing under it changes nothing
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, key, "want a mapping of keys, not a %s", kindName(n))
		return
	}
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if !d.spend(k) {
			return
		}
		name := k.Value
		if line, dup := seen[name]; dup {
			d.fail(k, "", "key %q given twice (first on line %d)", joinKey(key, name), line)
			continue
		}
		seen[name] = k.Line
		f, ok := fieldByTag(v, name)
		if !ok {
			msg := fmt.Sprintf("unknown key %q", joinKey(key, name))
			if s := closest(name, tagNames(v.Type())); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", joinKey(key, s))
			}
			d.fail(k, "", "%s", msg)
			continue
		}
		d.value(val, f, joinKey(key, name))
	}
}

func (d *decoder) list(n *yaml.Node, v reflect.Value, key string) {
	elem := v.Type().Elem()
	switch {
	case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
		v.SetZero()
	case n.Kind == yaml.ScalarNode && elem.Kind() != reflect.Struct:
		out, msgs := parseScalarList(elem, n.Value)
		for _, m := range msgs {
			d.fail(n, key, "%s", m)
		}
		v.Set(out)
	case n.Kind == yaml.SequenceNode:
		out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.value(item, out.Index(i), fmt.Sprintf("%s[%d]", key, i))
		}
		v.Set(out)
	default:
		d.fail(n, key, "want a list, not a %s", kindName(n))
	}
}

// parseScalarList splits a comma-separated list, the form flags take and a
// YAML scalar may use; "" is the empty list.
func parseScalarList(elem reflect.Type, s string) (reflect.Value, []string) {
	out := reflect.MakeSlice(reflect.SliceOf(elem), 0, 4)
	var msgs []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		e := reflect.New(elem).Elem()
		if msg := setScalar(e, f); msg != "" {
			msgs = append(msgs, msg)
			continue
		}
		out = reflect.Append(out, e)
	}
	return out, msgs
}

// setScalar parses s into v and returns what is wrong with it, or "".
func setScalar(v reflect.Value, s string) string {
	switch {
	case v.Type() == durationType:
		d, msg := parseDuration(s)
		if msg == "" {
			v.SetInt(int64(d))
		}
		return msg
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Int || v.Kind() == reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil || v.OverflowInt(n) {
			return fmt.Sprintf("%s is not a whole number", quote(s))
		}
		v.SetInt(n)
	case v.Kind() == reflect.Uint16:
		p, ok := parsePort(s)
		if !ok {
			return fmt.Sprintf("%s is not a port (1-65535)", quote(s))
		}
		v.SetUint(uint64(p))
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Sprintf("%s is not true or false", quote(s))
		}
		v.SetBool(b)
	default:
		return fmt.Sprintf("cannot be set from %s", quote(s)) // a Config field of a kind this file does not know
	}
	return ""
}

// parseDuration takes Go's duration syntax and a bare 0. Any other bare
// number is refused: "30" could mean seconds or nanoseconds.
func parseDuration(s string) (time.Duration, string) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, ""
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return 0, fmt.Sprintf("%s has no unit: write %ss (or ms, m, h)", s, s)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Sprintf("%s is not a duration (write e.g. 30s, 5m or 1h30m)", quote(s))
	}
	return d, ""
}

// parsePort parses a port number 1-65535.
func parsePort(s string) (uint16, bool) {
	p, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	return uint16(p), err == nil && p != 0
}

// quote shows a value in a message: numbers bare, anything else quoted,
// so that an empty or odd value is visible.
func quote(s string) string {
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return s
	}
	return strconv.Quote(s)
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "single value"
}

func joinKey(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// yamlName is a struct field's YAML key, or "" when it has none.
func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

func tagNames(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		if n := yamlName(t.Field(i)); n != "" {
			out = append(out, n)
		}
	}
	return out
}

func fieldByTag(v reflect.Value, name string) (reflect.Value, bool) {
	for i := range v.NumField() {
		if yamlName(v.Type().Field(i)) == name {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// fieldByKey finds the field at a dotted path ("leases.max_leases").
func fieldByKey(v reflect.Value, key string) (reflect.Value, bool) {
	for part := range strings.SplitSeq(key, ".") {
		if v.Kind() != reflect.Struct {
			return reflect.Value{}, false
		}
		var ok bool
		if v, ok = fieldByTag(v, part); !ok {
			return reflect.Value{}, false
		}
	}
	return v, true
}

// closest returns the known name nearest to name when it is near enough
// to be a typo (edit distance at most 2, or a third of its length).
func closest(name string, known []string) string {
	best, bestDist := "", max(2, len(name)/3)+1
	for _, k := range known {
		if d := editDistance(name, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = slices.Min([]int{prev[j] + 1, cur[j-1] + 1, prev[j-1] + cost})
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
