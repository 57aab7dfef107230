package eval

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
	"github.com/theory/jsonpath/spec"
)

// Condition is a compiled boolean expression over the scope, such as
// $.steps.validate.output.valid == true && $.input.size > 10.
//
// The language is expr (github.com/expr-lang/expr) with one variable, $, holding the scope.
// Allowed: literals (numbers, strings, true, false, nil, lists, maps), member access ($.a.b,
// $.a["b"], $.list[0], $.list[-1]), the operators == != < <= > >= && || ! and or not in
// "not in" + - * / % ** ?? contains startsWith endsWith matches, ranges (1..10), the ternary
// operator and if/else, and the builtins listed in ConditionBuiltins.
//
// Rejected at compile time: other identifiers and functions, closures and the builtins that
// loop over a collection (map, filter, all, reduce, ...), variables (let), sequences (;) and
// slices. With no loops and no variables the work of an evaluation grows at most linearly with
// the expression, which is bounded by MaxConditionNodes; what the VM allocates (ranges, list
// and map literals) is bounded by ConditionMemoryBudget.
//
// Member access is nil-safe with JSONPath semantics: a missing key, an index out of range, or
// a member of a value that is not an object or list gives nil, so
// $.steps.skipped.output.valid == true is false rather than an error. Operators that need a
// value still fail on nil ($.input.missing > 10 is an error); write ($.input.n ?? 0) > 10 to
// default it. Numbers compare across kinds: $.input.n == 3 holds for the float64 3 that
// encoding/json decodes.
type Condition struct {
	src     string
	program *vm.Program
	refs    []string
}

// ConditionBuiltins lists the builtin functions a condition may call. Each runs in time linear
// in its arguments and cannot multiply its input.
var ConditionBuiltins = []string{
	"len", "type", "abs", "ceil", "floor", "round", "int", "float", "string",
	"lower", "upper", "trim", "trimPrefix", "trimSuffix", "hasPrefix", "hasSuffix",
	"indexOf", "lastIndexOf", "max", "min", "first", "last", "keys", "values",
}

// getFunc is the function nil-safe member access is rewritten to. Users cannot call it: the
// validation pass rejects every call that is not an allowed builtin.
const getFunc = "$get"

// CompileCondition compiles an expression once; evaluation is bounded in cost.
func CompileCondition(src string) (*Condition, error) {
	c, err := compileCondition(src)
	if err != nil {
		return nil, fmt.Errorf("compile condition %q: %w", abbreviate(src), err)
	}
	return c, nil
}

func compileCondition(src string) (*Condition, error) {
	if len(src) > MaxSourceLen {
		return nil, fmt.Errorf("longer than %d bytes", MaxSourceLen)
	}
	// First pass: parse the author's expression as written, check it uses only what is allowed
	// and collect its references. Parsing with every builtin known makes a forbidden builtin
	// show up as such rather than as an unknown function.
	pc := conf.CreateNew()
	pc.MaxNodes = MaxConditionNodes
	tree, err := parser.ParseWithConfig(src, pc)
	if err != nil {
		return nil, exprError{err}
	}
	v := &conditionCheck{seen: map[string]bool{}}
	v.check(tree.Node)
	if v.err != nil {
		return nil, v.err
	}

	opts := []expr.Option{
		expr.Env(map[string]any{"$": map[string]any{}}),
		expr.AsBool(),
		expr.MaxNodes(MaxConditionNodes),
		expr.DisableAllBuiltins(),
		expr.Function(getFunc, nilSafeGet),
		expr.Patch(nilSafeMembers{}),
	}
	for _, name := range ConditionBuiltins {
		opts = append(opts, expr.EnableBuiltin(name))
	}
	program, err := expr.Compile(src, opts...)
	if err != nil {
		return nil, exprError{err}
	}
	return &Condition{src: src, program: program, refs: v.refs}, nil
}

// Eval evaluates the condition. A non-boolean result is an error.
func (c *Condition) Eval(scope any) (bool, error) {
	// A VM is cheap and not safe for concurrent use; one per evaluation keeps Condition
	// shareable.
	machine := vm.VM{MemoryBudget: ConditionMemoryBudget}
	out, err := machine.Run(c.program, map[string]any{"$": scope})
	if err != nil {
		return false, fmt.Errorf("evaluate condition %q: %w", abbreviate(c.src), exprError{err})
	}
	b, ok := out.(bool)
	if !ok {
		return false, fmt.Errorf("evaluate condition %q: result is %s, not a boolean", abbreviate(c.src), withArticle(jsonTypeName(out)))
	}
	return b, nil
}

// String returns the source.
func (c *Condition) String() string { return c.src }

// Refs returns the canonical form of every reference the condition reads, in order of
// appearance, without duplicates. A member chain with a computed key ($.input[$.vars.k]) is
// reported up to that key ($.input), plus the references inside the key.
func (c *Condition) Refs() []string { return slices.Clone(c.refs) }

// nilSafeGet reads a member with JSONPath semantics: a key of an object or an index of a list,
// nil when it does not exist.
func nilSafeGet(args ...any) (any, error) {
	if len(args) != 2 {
		return nil, fmt.Errorf("%s: want 2 arguments, got %d", getFunc, len(args))
	}
	switch k := args[1].(type) {
	case string:
		v, _ := lookupName(args[0], k)
		return v, nil
	case int:
		v, _ := lookupIndex(args[0], int64(k))
		return v, nil
	case float64:
		if k != math.Trunc(k) || math.Abs(k) > 1<<53 {
			return nil, nil
		}
		v, _ := lookupIndex(args[0], int64(k))
		return v, nil
	}
	return nil, nil
}

// nilSafeMembers rewrites every member access a.b into $get(a, "b").
type nilSafeMembers struct{}

func (nilSafeMembers) Visit(node *ast.Node) {
	m, ok := (*node).(*ast.MemberNode)
	if !ok {
		return
	}
	call := &ast.CallNode{
		Callee:    &ast.IdentifierNode{Value: getFunc},
		Arguments: []ast.Node{m.Node, m.Property},
	}
	call.Callee.SetLocation(m.Location())
	ast.Patch(node, call)
}

// conditionCheck walks an author's expression: it rejects what conditions may not use and
// collects the references.
type conditionCheck struct {
	err  error
	refs []string
	seen map[string]bool
}

func (v *conditionCheck) fail(n ast.Node, format string, args ...any) {
	if v.err == nil {
		v.err = fmt.Errorf("at offset %d: %s", n.Location().From, fmt.Sprintf(format, args...))
	}
}

func (v *conditionCheck) check(n ast.Node) {
	if v.err != nil || n == nil {
		return
	}
	switch n := n.(type) {
	case *ast.NilNode, *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.StringNode:
	case *ast.IdentifierNode:
		if n.Value != "$" {
			v.fail(n, "unknown name %q: references start with $ (as in $.input.x)", n.Value)
			return
		}
		v.refs = addRef(v.refs, v.seen, "$")
	case *ast.MemberNode:
		v.member(n)
	case *ast.ChainNode:
		v.check(n.Node)
	case *ast.UnaryNode:
		v.check(n.Node)
	case *ast.BinaryNode:
		v.check(n.Left)
		v.check(n.Right)
	case *ast.ConditionalNode:
		v.check(n.Cond)
		v.check(n.Exp1)
		v.check(n.Exp2)
	case *ast.ArrayNode:
		for _, e := range n.Nodes {
			v.check(e)
		}
	case *ast.MapNode:
		for _, p := range n.Pairs {
			v.check(p)
		}
	case *ast.PairNode:
		v.check(n.Key)
		v.check(n.Value)
	case *ast.BuiltinNode:
		if !slices.Contains(ConditionBuiltins, n.Name) {
			v.fail(n, "function %s is not allowed in a condition", n.Name)
			return
		}
		for _, a := range n.Arguments {
			v.check(a)
		}
	case *ast.CallNode:
		v.fail(n, "unknown function %s: conditions may call only the builtins %v", calleeName(n), ConditionBuiltins)
	case *ast.PredicateNode, *ast.PointerNode:
		v.fail(n, "closures are not allowed in a condition")
	case *ast.VariableDeclaratorNode:
		v.fail(n, "variables (let) are not allowed in a condition")
	case *ast.SequenceNode:
		v.fail(n, "sequences (;) are not allowed in a condition")
	case *ast.SliceNode:
		v.fail(n, "slices are not allowed in a condition")
	default:
		v.fail(n, "%T is not allowed in a condition", n)
	}
}

// member records the reference of a member chain rooted at $ and checks computed keys.
func (v *conditionCheck) member(n *ast.MemberNode) {
	if n.Method {
		v.fail(n, "method calls are not allowed in a condition")
		return
	}
	// Unwind the chain to its base, keeping the accesses from the base outwards.
	var chain []*ast.MemberNode
	var base ast.Node = n
	for {
		switch b := base.(type) {
		case *ast.MemberNode:
			chain = append(chain, b)
			base = b.Node
			continue
		case *ast.ChainNode:
			base = b.Node
			continue
		}
		break
	}
	slices.Reverse(chain)
	id, rooted := base.(*ast.IdentifierNode)
	rooted = rooted && id.Value == "$"
	if !rooted {
		v.check(base)
	}
	// The reference is the longest prefix of constant keys; the keys after it are checked
	// as expressions of their own.
	var sel []spec.Selector
	rest := chain
	for rooted && len(rest) > 0 {
		s, ok := constantSelector(rest[0].Property)
		if !ok {
			break
		}
		sel = append(sel, s)
		rest = rest[1:]
	}
	if rooted {
		v.refs = addRef(v.refs, v.seen, canonical(sel))
	}
	for _, m := range rest {
		v.check(m.Property)
	}
}

// constantSelector turns a literal member key into a JSONPath selector.
func constantSelector(n ast.Node) (spec.Selector, bool) {
	switch p := n.(type) {
	case *ast.StringNode:
		return spec.Name(p.Value), true
	case *ast.IntegerNode:
		return spec.Index(p.Value), true
	case *ast.UnaryNode:
		if i, ok := p.Node.(*ast.IntegerNode); ok && p.Operator == "-" {
			return spec.Index(-i.Value), true
		}
	}
	return nil, false
}

func calleeName(n *ast.CallNode) string {
	if id, ok := n.Callee.(*ast.IdentifierNode); ok {
		return id.Value
	}
	return n.Callee.String()
}

// exprError keeps the first line of an expr error: the message and its (line:column). The
// lines after it repeat the source, which can be long.
type exprError struct{ err error }

func (e exprError) Error() string {
	msg, _, _ := strings.Cut(e.err.Error(), "\n")
	return msg
}

func (e exprError) Unwrap() error { return e.err }
