package eval

import (
	"errors"
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
// $.steps.skipped.output.valid == true is false rather than an error, and a condition whose
// result is nil counts as false. Operators that need a value still fail on nil
// ($.input.missing > 10 is an error); write ($.input.n ?? 0) > 10 to default it. Any other
// non-boolean result is an error.
//
// Numbers follow JSON: scope numbers are float64 and compare with integer literals
// ($.input.n == 3 holds for the 3 that encoding/json decodes); % works on them too (with
// math.Mod semantics); and x in a..b is a bounds check (x an integer with a <= x <= b), so a
// large range costs nothing.
type Condition struct {
	src     string
	program *vm.Program
	refs    []string
}

// ConditionBuiltins returns the builtin functions a condition may call. Each runs in time linear
// in its arguments and cannot multiply its input.
func ConditionBuiltins() []string { return slices.Clone(conditionBuiltins) }

var conditionBuiltins = []string{
	"len", "type", "abs", "ceil", "floor", "round", "int", "float", "string",
	"lower", "upper", "trim", "trimPrefix", "trimSuffix", "hasPrefix", "hasSuffix",
	"indexOf", "lastIndexOf", "max", "min", "first", "last", "keys", "values",
}

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
		expr.Function(modFunc, modulo),
		expr.Function(inRangeFunc, inRange),
		expr.Patch(rewrite{}),
	}
	for _, name := range conditionBuiltins {
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

// The functions the rewrite pass calls. Users cannot call them: the validation pass rejects
// every call that is not an allowed builtin.
const (
	getFunc     = "$get"
	modFunc     = "$mod"
	inRangeFunc = "$inRange"
)

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
	default:
		i, ok := integer(k)
		if !ok {
			return nil, nil
		}
		v, _ := lookupIndex(args[0], i)
		return v, nil
	}
}

// modulo is % for the float64 numbers of JSON data as well as for integers.
func modulo(args ...any) (any, error) {
	if len(args) != 2 {
		return nil, fmt.Errorf("%s: want 2 arguments, got %d", modFunc, len(args))
	}
	a, aInt := args[0].(int)
	b, bInt := args[1].(int)
	if aInt && bInt {
		if b == 0 {
			return nil, errors.New("integer divide by zero")
		}
		return a % b, nil
	}
	x, ok1 := number(args[0])
	y, ok2 := number(args[1])
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("invalid operation: %T %% %T", args[0], args[1])
	}
	if y == 0 {
		return nil, errors.New("divide by zero")
	}
	return math.Mod(x, y), nil
}

// inRange is x in from..to without building the range: true when x is an integer (of any
// number type) between from and to inclusive.
func inRange(args ...any) (any, error) {
	if len(args) != 3 {
		return nil, fmt.Errorf("%s: want 3 arguments, got %d", inRangeFunc, len(args))
	}
	from, ok1 := integer(args[1])
	to, ok2 := integer(args[2])
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("invalid range: %T..%T", args[1], args[2])
	}
	x, ok := integer(args[0])
	return ok && from <= x && x <= to, nil
}

// number reads an int or float64, the number types of conditions.
func number(v any) (float64, bool) {
	switch x := v.(type) {
	case int:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// integer reads an int, or a float64 that holds an integer.
func integer(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case float64:
		if x != math.Trunc(x) || math.Abs(x) > 1<<53 {
			return 0, false
		}
		return int64(x), true
	}
	return 0, false
}

// rewrite makes the compiled program follow JSON semantics: every member access a.b becomes
// $get(a, "b"), a % b becomes $mod(a, b), and x in a..b becomes $inRange(x, a, b).
type rewrite struct{}

func (rewrite) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.MemberNode:
		patchCall(node, getFunc, n.Node, n.Property)
	case *ast.BinaryNode:
		switch n.Operator {
		case "%":
			patchCall(node, modFunc, n.Left, n.Right)
		case "in":
			if r, ok := n.Right.(*ast.BinaryNode); ok && r.Operator == ".." {
				patchCall(node, inRangeFunc, n.Left, r.Left, r.Right)
			}
		}
	}
}

func patchCall(node *ast.Node, fn string, args ...ast.Node) {
	callee := &ast.IdentifierNode{Value: fn}
	callee.SetLocation((*node).Location())
	ast.Patch(node, &ast.CallNode{Callee: callee, Arguments: args})
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
		if !slices.Contains(conditionBuiltins, n.Name) {
			v.fail(n, "function %s is not allowed in a condition", n.Name)
			return
		}
		for _, a := range n.Arguments {
			v.check(a)
		}
	case *ast.CallNode:
		v.fail(n, "unknown function %s: conditions may call only the builtins %s", calleeName(n), strings.Join(conditionBuiltins, ", "))
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
