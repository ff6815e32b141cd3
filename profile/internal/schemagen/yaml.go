package schemagen

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// This file is a reader for the part of YAML that Apple's schema files use:
// block mappings and block sequences nested by indentation, plain and quoted
// scalars that may run over several lines, literal or folded block scalars,
// and anchors with aliases (PyYAML, which wrote the files, shares repeated
// subkeys as "&id001" … "*id001", even inside themselves). Flow collections, tags and multiple
// documents do not occur there and are not understood. It exists so that bramley needs no
// YAML dependency for a generator that runs at development time.

type nodeKind int

const (
	scalarNode nodeKind = iota
	mappingNode
	sequenceNode
)

// node is one YAML value. Mapping keys keep their order so generated code
// follows the order of Apple's files.
type node struct {
	kind   nodeKind
	scalar string
	keys   []string
	values []*node
	items  []*node
	line   int // 1-based line where the value starts, for error messages
}

// get returns the value of a mapping key, or nil.
func (n *node) get(key string) *node {
	if n == nil || n.kind != mappingNode {
		return nil
	}
	for i, k := range n.keys {
		if k == key {
			return n.values[i]
		}
	}
	return nil
}

// str returns a scalar's text, or "" for anything else.
func (n *node) str() string {
	if n == nil || n.kind != scalarNode {
		return ""
	}
	return n.scalar
}

type yamlLine struct {
	num    int    // 1-based
	indent int    // leading spaces
	text   string // the line without its indentation
	raw    string // the whole line, for block scalars
	blank  bool   // empty, or only a comment
}

type yamlParser struct {
	lines   []yamlLine
	pos     int
	anchors map[string]*node // &name → the value it labels, for *name
}

// parseYAML reads one YAML document.
func parseYAML(data string) (*node, error) {
	p := &yamlParser{anchors: map[string]*node{}}
	for i, raw := range strings.Split(strings.ReplaceAll(data, "\r\n", "\n"), "\n") {
		if strings.HasPrefix(raw, "\t") {
			return nil, fmt.Errorf("line %d: tab used for indentation", i+1)
		}
		text := strings.TrimLeft(raw, " ")
		p.lines = append(p.lines, yamlLine{
			num:    i + 1,
			indent: len(raw) - len(text),
			text:   strings.TrimRight(text, " "),
			raw:    raw,
			blank:  text == "" || strings.HasPrefix(text, "#") || text == "---",
		})
	}
	p.skipBlank()
	if p.pos >= len(p.lines) {
		return &node{kind: mappingNode}, nil
	}
	n, err := p.parseBlock()
	if err != nil {
		return nil, err
	}
	p.skipBlank()
	if p.pos < len(p.lines) {
		l := p.lines[p.pos]
		return nil, fmt.Errorf("line %d: unexpected %q at indentation %d", l.num, l.text, l.indent)
	}
	return n, nil
}

func (p *yamlParser) skipBlank() {
	for p.pos < len(p.lines) && p.lines[p.pos].blank {
		p.pos++
	}
}

// peek returns the next non-blank line without consuming it.
func (p *yamlParser) peek() (yamlLine, bool) {
	p.skipBlank()
	if p.pos >= len(p.lines) {
		return yamlLine{}, false
	}
	return p.lines[p.pos], true
}

func isSeqItem(text string) bool { return text == "-" || strings.HasPrefix(text, "- ") }

// parseBlock reads the mapping or sequence starting at the next line.
func (p *yamlParser) parseBlock() (*node, error) {
	l, _ := p.peek()
	if isSeqItem(l.text) {
		return p.parseSeq(l.indent)
	}
	return p.parseMap(l.indent)
}

func (p *yamlParser) parseMap(indent int) (*node, error) {
	l, _ := p.peek()
	n := &node{kind: mappingNode, line: l.num}
	for {
		l, ok := p.peek()
		if !ok || l.indent < indent || l.indent == indent && isSeqItem(l.text) {
			return n, nil
		}
		if l.indent > indent {
			return nil, fmt.Errorf("line %d: unexpected indentation", l.num)
		}
		key, rest, ok := splitKey(l.text)
		if !ok {
			return nil, fmt.Errorf("line %d: expected \"key: value\", got %q", l.num, l.text)
		}
		for _, k := range n.keys {
			if k == key {
				return nil, fmt.Errorf("line %d: duplicate key %q", l.num, key)
			}
		}
		p.pos++
		v, err := p.parseValue(indent, rest, l.num)
		if err != nil {
			return nil, err
		}
		n.keys = append(n.keys, key)
		n.values = append(n.values, v)
	}
}

func (p *yamlParser) parseSeq(indent int) (*node, error) {
	l, _ := p.peek()
	n := &node{kind: sequenceNode, line: l.num}
	for {
		l, ok := p.peek()
		if !ok || l.indent != indent || !isSeqItem(l.text) {
			if ok && l.indent > indent {
				return nil, fmt.Errorf("line %d: unexpected indentation", l.num)
			}
			return n, nil
		}
		rest := strings.TrimPrefix(l.text, "-")
		trimmed := strings.TrimLeft(rest, " ")
		var item *node
		var err error
		switch _, _, isKey := splitKey(trimmed); {
		case trimmed == "":
			p.pos++
			item, err = p.parseNested(indent, l.num)
		case isKey:
			// "- key: value" opens a mapping whose keys line up with
			// "key": rewrite the line as that mapping's first entry.
			col := indent + 1 + len(rest) - len(trimmed)
			p.lines[p.pos] = yamlLine{num: l.num, indent: col, text: trimmed, raw: l.raw}
			item, err = p.parseMap(col)
		default:
			p.pos++
			item, err = p.parseValue(indent, trimmed, l.num)
		}
		if err != nil {
			return nil, err
		}
		n.items = append(n.items, item)
	}
}

// parseNested reads the block under a line at indent that ended in "key:"
// or "-": deeper lines, or for a key a sequence at the same indentation.
func (p *yamlParser) parseNested(indent, num int) (*node, error) {
	l, ok := p.peek()
	if ok && l.indent > indent {
		return p.parseBlock()
	}
	return &node{kind: scalarNode, line: num}, nil
}

// parseValue reads the value after "key:" (or "- ") on a line at indent.
func (p *yamlParser) parseValue(indent int, rest string, num int) (*node, error) {
	rest = strings.TrimSpace(rest)
	if strings.HasPrefix(rest, "&") {
		name, after, _ := strings.Cut(rest[1:], " ")
		if name == "" {
			return nil, fmt.Errorf("line %d: empty anchor", num)
		}
		// Registered before its content is read: Apple's schema nests a
		// structure in itself (a home screen folder holds pages of icons).
		placeholder := &node{}
		p.anchors[name] = placeholder
		n, err := p.parseValue(indent, after, num)
		if err != nil {
			return nil, err
		}
		*placeholder = *n
		return placeholder, nil
	}
	if strings.HasPrefix(rest, "*") {
		n, ok := p.anchors[rest[1:]]
		if !ok {
			return nil, fmt.Errorf("line %d: alias %s names no earlier anchor", num, rest)
		}
		return n, nil
	}
	switch {
	case rest == "":
		l, ok := p.peek()
		if ok && l.indent == indent && isSeqItem(l.text) {
			return p.parseSeq(indent)
		}
		return p.parseNested(indent, num)
	case rest[0] == '|' || rest[0] == '>':
		return p.blockScalar(indent, rest, num)
	case rest[0] == '[' || rest[0] == '{' || rest[0] == '!':
		return nil, fmt.Errorf("line %d: flow collections and tags are not supported", num)
	}
	// A scalar may continue on the following, more indented lines.
	parts := []string{rest}
	for {
		save := p.pos
		l, ok := p.peek()
		if !ok || l.indent <= indent {
			p.pos = save
			break
		}
		if _, _, isKey := splitKey(l.text); isKey && rest[0] != '\'' && rest[0] != '"' {
			// A plain scalar cannot hold ": " (PyYAML would have quoted
			// it), so this is a mapping at the wrong indentation.
			return nil, fmt.Errorf("line %d: unexpected indentation", l.num)
		}
		blanks := 0
		for i := save; i < p.pos; i++ {
			if p.lines[i].text == "" {
				blanks++
			}
		}
		for ; blanks > 0; blanks-- {
			parts = append(parts, "\n")
		}
		parts = append(parts, l.text)
		p.pos++
	}
	s, err := flowScalar(parts)
	if err != nil {
		return nil, fmt.Errorf("line %d: %w", num, err)
	}
	return &node{kind: scalarNode, scalar: s, line: num}, nil
}

// flowScalar folds the lines of a plain or quoted scalar: line breaks
// become spaces, and an empty line a newline.
func flowScalar(parts []string) (string, error) {
	var b strings.Builder
	for i, s := range parts {
		switch {
		case s == "\n":
			b.WriteString("\n")
		case i > 0 && parts[i-1] != "\n":
			b.WriteString(" ")
			b.WriteString(s)
		default:
			b.WriteString(s)
		}
	}
	s := b.String()
	switch s[0] {
	case '\'':
		if len(s) < 2 || s[len(s)-1] != '\'' {
			return "", errors.New("unterminated single-quoted scalar")
		}
		return strings.ReplaceAll(s[1:len(s)-1], "''", "'"), nil
	case '"':
		u, err := strconv.Unquote(s)
		if err != nil {
			return "", fmt.Errorf("double-quoted scalar: %w", err)
		}
		return u, nil
	}
	if i := strings.Index(s, " #"); i >= 0 {
		s = strings.TrimRight(s[:i], " ")
	}
	return s, nil
}

// blockScalar reads a literal (|) or folded (>) scalar: every following
// line that is blank or indented deeper than indent.
func (p *yamlParser) blockScalar(indent int, header string, num int) (*node, error) {
	chomp := ""
	if strings.ContainsAny(header[1:], "-") {
		chomp = "-"
	} else if strings.ContainsAny(header[1:], "+") {
		chomp = "+"
	}
	var lines []string
	contentIndent := -1
	for p.pos < len(p.lines) {
		l := p.lines[p.pos]
		if strings.TrimSpace(l.raw) != "" {
			if l.indent <= indent {
				break
			}
			if contentIndent < 0 {
				contentIndent = l.indent
			}
			if l.indent < contentIndent {
				return nil, fmt.Errorf("line %d: block scalar line less indented than its first line", l.num)
			}
			lines = append(lines, l.raw[contentIndent:])
		} else {
			lines = append(lines, "")
		}
		p.pos++
	}
	// Trailing blank lines belong to chomping, not to the text.
	trailing := 0
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
		trailing++
	}
	var s string
	if header[0] == '|' {
		s = strings.Join(lines, "\n")
	} else {
		var b strings.Builder
		for i, l := range lines {
			if i > 0 {
				if l == "" || lines[i-1] == "" {
					b.WriteString("\n")
				} else {
					b.WriteString(" ")
				}
			}
			b.WriteString(l)
		}
		s = b.String()
	}
	switch {
	case chomp == "+":
		s += strings.Repeat("\n", trailing+1)
	case chomp == "" && s != "":
		s += "\n"
	}
	return &node{kind: scalarNode, scalar: s, line: num}, nil
}

// splitKey splits "key: value" or "key:". Keys in Apple's files are plain
// words; a quoted key is unquoted.
func splitKey(text string) (key, rest string, ok bool) {
	if text == "" {
		return "", "", false
	}
	if text[0] == '\'' || text[0] == '"' {
		end := strings.IndexByte(text[1:], text[0])
		if end < 0 {
			return "", "", false
		}
		after := text[end+2:]
		if after != ":" && !strings.HasPrefix(after, ": ") {
			return "", "", false
		}
		return text[1 : end+1], strings.TrimPrefix(after, ":"), true
	}
	if strings.HasSuffix(text, ":") && !strings.Contains(text, ": ") {
		return text[:len(text)-1], "", true
	}
	i := strings.Index(text, ": ")
	if i <= 0 {
		return "", "", false
	}
	return text[:i], text[i+2:], true
}
