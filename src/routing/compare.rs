//! Type-checked comparisons in `when` expressions.
//!
//! MiniJinja compares values of different types without complaint: `70 >= '50'` is decided by
//! an internal order of types and `'50' == 50` is simply false, so a quoted number silently
//! disables a route. The relay rewrites each comparison (`==`, `!=`, `<`, `<=`, `>`, `>=`)
//! of a `when` into a call to [`CMP_FUNCTION`], which compares exactly like MiniJinja but
//! fails when the two sides have different types ([`mismatch`]): at run time the condition
//! then fails open with a warning, and `check` reports the comparison.
//!
//! The rewrite goes through MiniJinja's own parser (`unstable_machinery`): the expression is
//! parsed into its syntax tree and printed back, fully parenthesised, with the comparisons
//! replaced. Everything else keeps its meaning (tested below on the README's examples).

use minijinja::machinery::ast::{BinOpKind, CallArg, CompareOpKind, Expr, UnaryOpKind};
use minijinja::value::{Value, ValueKind};
use minijinja::{Error, ErrorKind, State};

/// The function every comparison of a `when` is rewritten into.
pub const CMP_FUNCTION: &str = "__relay_cmp";
/// Context variable: when true, mismatches are recorded (for `check`) instead of failing.
pub const COLLECT_VAR: &str = "__relay_collect_mismatches";
/// State temp holding the recorded mismatches (a list of strings).
pub const MISMATCHES_TEMP: &str = "__relay_mismatches";

/// The source of `source` with every comparison replaced by a call to [`CMP_FUNCTION`].
///
/// Guard: MiniJinja reads some keywords as variable names where an operator cannot stand
/// (`x == not -1` is the variable `not` minus 1, `x == not (y)` a call of a function `not`);
/// printed back in another position they would read as the operator. An expression with such
/// a name is kept as it is, unchecked, rather than risk changing its meaning.
pub fn rewrite(source: &str) -> Result<String, Error> {
    let expr = minijinja::machinery::parse_expr(source)?;
    KEYWORD_AS_NAME.with(|k| k.set(false));
    let mut out = String::new();
    print(&expr, true, &mut out);
    if KEYWORD_AS_NAME.with(|k| k.get()) {
        return Ok(source.to_string());
    }
    Ok(out)
}

thread_local! {
    /// Set by [`print`] when a variable is named like a keyword (see [`rewrite`]).
    static KEYWORD_AS_NAME: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Words the expression grammar gives a meaning of their own.
fn is_keyword(id: &str) -> bool {
    matches!(
        id,
        "not"
            | "and"
            | "or"
            | "in"
            | "is"
            | "if"
            | "else"
            | "true"
            | "false"
            | "none"
            | "True"
            | "False"
            | "None"
    )
}

/// Whether comparing `left` with `right` mixes two types, and if so how to say it.
///
/// Rule: when both sides are set (neither undefined nor none) and their kinds (number,
/// string, bool, list, map) differ, the comparison is a mismatch. Reason: such a comparison
/// has no useful answer (`'50' == 50` is false, `70 >= '50'` is decided by type order) and
/// is almost always a quoting mistake in the config; none/undefined stay comparable because
/// `alert.custom_status == none` is a legitimate test for a missing field.
pub fn mismatch(left: &Value, right: &Value) -> Option<String> {
    let kind = |v: &Value| match v.kind() {
        ValueKind::Number => Some("a number"),
        ValueKind::String => Some("a string"),
        ValueKind::Bool => Some("a boolean"),
        ValueKind::Seq => Some("a list"),
        ValueKind::Map => Some("a map"),
        _ => None,
    };
    match (kind(left), kind(right)) {
        (Some(l), Some(r)) if l != r => Some(format!("compares {l} with {r}")),
        _ => None,
    }
}

/// The comparison behind [`CMP_FUNCTION`]: `left op right` as MiniJinja computes it, or an
/// error naming the comparison when the types differ (see [`mismatch`]).
pub fn compare(
    state: &State,
    left: Value,
    op: &str,
    right: Value,
    text: &str,
) -> Result<bool, Error> {
    if let Some(why) = mismatch(&left, &right) {
        let message = format!("`{text}` {why} (quote both sides alike, e.g. 50 and 50)");
        if state.lookup(COLLECT_VAR).is_some_and(|v| v.is_true()) {
            let mut seen: Vec<Value> = state
                .get_temp(MISMATCHES_TEMP)
                .and_then(|v| v.try_iter().ok().map(|it| it.collect()))
                .unwrap_or_default();
            if !seen.iter().any(|v| v.as_str() == Some(message.as_str())) {
                seen.push(Value::from(message));
            }
            state.set_temp(MISMATCHES_TEMP, Value::from(seen));
        } else {
            return Err(Error::new(ErrorKind::InvalidOperation, message));
        }
    }
    Ok(match op {
        "==" => left == right,
        "!=" => left != right,
        "<" => left < right,
        "<=" => left <= right,
        ">" => left > right,
        ">=" => left >= right,
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("unknown comparison {other:?}"),
            ))
        }
    })
}

fn compare_op(op: &CompareOpKind) -> Option<&'static str> {
    Some(match op {
        CompareOpKind::Eq => "==",
        CompareOpKind::Ne => "!=",
        CompareOpKind::Lt => "<",
        CompareOpKind::Lte => "<=",
        CompareOpKind::Gt => ">",
        CompareOpKind::Gte => ">=",
        CompareOpKind::In | CompareOpKind::NotIn => return None,
    })
}

fn binop(op: &BinOpKind) -> &'static str {
    match op {
        BinOpKind::Eq => "==",
        BinOpKind::Ne => "!=",
        BinOpKind::Lt => "<",
        BinOpKind::Lte => "<=",
        BinOpKind::Gt => ">",
        BinOpKind::Gte => ">=",
        BinOpKind::ScAnd => "and",
        BinOpKind::ScOr => "or",
        BinOpKind::Add => "+",
        BinOpKind::Sub => "-",
        BinOpKind::Mul => "*",
        BinOpKind::Div => "/",
        BinOpKind::FloorDiv => "//",
        BinOpKind::Rem => "%",
        BinOpKind::Pow => "**",
        BinOpKind::Concat => "~",
        BinOpKind::In => "in",
    }
}

/// `left op right`, rewritten into a [`CMP_FUNCTION`] call when `rewrite` is set and `op` is
/// a comparison; the call carries the comparison's own text for the error message.
fn print_comparison(left: &Expr, op: &str, right: &Expr, rewrite: bool, out: &mut String) {
    let is_cmp = matches!(op, "==" | "!=" | "<" | "<=" | ">" | ">=");
    if rewrite && is_cmp {
        let mut text = String::new();
        print_operand(left, false, &mut text);
        text.push_str(&format!(" {op} "));
        print_operand(right, false, &mut text);
        out.push_str(&format!("{CMP_FUNCTION}("));
        print(left, true, out);
        out.push_str(&format!(", {op:?}, "));
        print(right, true, out);
        out.push_str(&format!(", {})", quote(&text)));
    } else {
        out.push('(');
        print_operand(left, rewrite, out);
        out.push_str(&format!(" {op} "));
        print_operand(right, rewrite, out);
        out.push(')');
    }
}

/// An operand: atoms as they are, anything compound in parentheses.
fn print_operand(e: &Expr, rewrite: bool, out: &mut String) {
    // A negative constant prints itself in parentheses (see `print`).
    let atom = matches!(
        e,
        Expr::Var(_)
            | Expr::Const(_)
            | Expr::GetAttr(_)
            | Expr::GetItem(_)
            | Expr::Call(_)
            | Expr::List(_)
    );
    if atom {
        print(e, rewrite, out);
    } else {
        out.push('(');
        print(e, rewrite, out);
        out.push(')');
    }
}

fn is_negative(v: &Value) -> bool {
    v.kind() == ValueKind::Number && v.as_i64().is_some_and(|n| n < 0)
        || f64::try_from(v.clone()).is_ok_and(|f| f < 0.0)
}

/// A string literal MiniJinja reads back as `s` (JSON escapes are Jinja escapes too).
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn print_const(v: &Value, out: &mut String) {
    match v.kind() {
        ValueKind::Undefined => out.push_str("undefined"),
        ValueKind::None => out.push_str("none"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::String => out.push_str(&quote(v.as_str().unwrap_or_default())),
        ValueKind::Number => match (v.as_i64(), f64::try_from(v.clone())) {
            (Some(i), _) if !v.to_string().contains('.') => out.push_str(&i.to_string()),
            (_, Ok(f)) => out.push_str(&format!("{f:?}")),
            _ => out.push_str(&v.to_string()),
        },
        ValueKind::Seq => {
            out.push('[');
            for (i, item) in v.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                print_const(&item, out);
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in v.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let value = v.get_item(&key).unwrap_or_default();
                print_const(&key, out);
                out.push_str(": ");
                print_const(&value, out);
            }
            out.push('}');
        }
        _ => out.push_str(&v.to_string()),
    }
}

fn print_args(args: &[CallArg], rewrite: bool, out: &mut String) {
    out.push('(');
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        match a {
            CallArg::Pos(e) => print(e, rewrite, out),
            CallArg::Kwarg(name, e) => {
                out.push_str(name);
                out.push('=');
                print(e, rewrite, out);
            }
            CallArg::PosSplat(e) => {
                out.push('*');
                print_operand(e, rewrite, out);
            }
            CallArg::KwargSplat(e) => {
                out.push_str("**");
                print_operand(e, rewrite, out);
            }
        }
    }
    out.push(')');
}

/// Print `e` back as an expression with the same meaning; comparisons become
/// [`CMP_FUNCTION`] calls when `rewrite` is set.
fn print(e: &Expr, rewrite: bool, out: &mut String) {
    match e {
        Expr::Var(v) => {
            if is_keyword(v.id) {
                KEYWORD_AS_NAME.with(|k| k.set(true));
            }
            out.push_str(v.id)
        }
        Expr::Const(c) => {
            if is_negative(&c.value) {
                out.push('(');
                print_const(&c.value, out);
                out.push(')');
            } else {
                print_const(&c.value, out);
            }
        }
        Expr::Slice(s) => {
            print_operand(&s.expr, rewrite, out);
            out.push('[');
            for (i, part) in [&s.start, &s.stop, &s.step].into_iter().enumerate() {
                if i > 0 {
                    out.push(':');
                }
                if let Some(p) = part {
                    print(p, rewrite, out);
                }
            }
            out.push(']');
        }
        Expr::UnaryOp(u) => {
            // The operand always in parentheses: `-a.b` would read back as `(-a).b`.
            out.push_str(match u.op {
                UnaryOpKind::Not => "(not (",
                UnaryOpKind::Neg => "(-(",
            });
            print(&u.expr, rewrite, out);
            out.push_str("))");
        }
        Expr::BinOp(b) => print_comparison(&b.left, binop(&b.op), &b.right, rewrite, out),
        Expr::Compare(c) => {
            // A chain `a < b < c` means `a < b and b < c`.
            out.push('(');
            let mut left = &c.expr;
            for (i, op) in c.ops.iter().enumerate() {
                if i > 0 {
                    out.push_str(" and ");
                }
                match (compare_op(&op.op), &op.op) {
                    (Some(sym), _) => print_comparison(left, sym, &op.expr, rewrite, out),
                    (None, CompareOpKind::NotIn) => {
                        out.push_str("(not ");
                        print_comparison(left, "in", &op.expr, rewrite, out);
                        out.push(')');
                    }
                    (None, _) => print_comparison(left, "in", &op.expr, rewrite, out),
                }
                left = &op.expr;
            }
            out.push(')');
        }
        Expr::IfExpr(i) => {
            out.push('(');
            print_operand(&i.true_expr, rewrite, out);
            out.push_str(" if ");
            print_operand(&i.test_expr, rewrite, out);
            if let Some(f) = &i.false_expr {
                out.push_str(" else ");
                print_operand(f, rewrite, out);
            }
            out.push(')');
        }
        Expr::Filter(f) => {
            out.push('(');
            if let Some(inner) = &f.expr {
                print_operand(inner, rewrite, out);
            }
            out.push('|');
            out.push_str(f.name);
            if !f.args.is_empty() {
                print_args(&f.args, rewrite, out);
            }
            out.push(')');
        }
        Expr::Test(t) => {
            out.push('(');
            print_operand(&t.expr, rewrite, out);
            out.push_str(" is ");
            out.push_str(t.name);
            if !t.args.is_empty() {
                print_args(&t.args, rewrite, out);
            }
            out.push(')');
        }
        Expr::GetAttr(g) => {
            print_operand(&g.expr, rewrite, out);
            out.push('.');
            out.push_str(g.name);
        }
        Expr::GetItem(g) => {
            print_operand(&g.expr, rewrite, out);
            out.push('[');
            print(&g.subscript_expr, rewrite, out);
            out.push(']');
        }
        Expr::Call(c) => {
            print_operand(&c.expr, rewrite, out);
            print_args(&c.args, rewrite, out);
        }
        Expr::List(l) => {
            out.push('[');
            for (i, item) in l.items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                print(item, rewrite, out);
            }
            out.push(']');
        }
        Expr::Map(m) => {
            out.push('{');
            for (i, (k, v)) in m.keys.iter().zip(&m.values).enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                print(k, rewrite, out);
                out.push_str(": ");
                print(v, rewrite, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::Environment;

    fn env() -> Environment<'static> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        crate::render::filters::register(&mut env);
        env.add_function(CMP_FUNCTION, compare);
        env
    }

    fn ctx() -> Value {
        Value::from_serialize(serde_json::json!({
            "alert": {"urgency": {"current_value": 70, "value": 60}, "title": "Beacon \"x\"",
                      "rule": {"name": "Cobalt"}, "tags": ["a", "b"], "score": 2.5},
            "event": {"type": "alert", "action": "created"},
            "hook": {"name": "soc"}, "enriched": true,
        }))
    }

    fn eval(env: &Environment, source: &str) -> Result<Value, Error> {
        env.compile_expression(source)?.eval(ctx())
    }

    /// The rewritten expression means what the original means, on expressions that compare
    /// values of one type (the README's examples and every kind of syntax node).
    #[test]
    fn rewriting_keeps_the_meaning() {
        let env = env();
        for source in [
            "alert.urgency.current_value >= 50 and alert.rule.name == 'Cobalt'",
            "(alert.urgency|urgency_value) >= 80",
            "'ransomware' in (alert.title or '')|lower",
            "hook.name == 'soc' and event.action != 'updated'",
            "not enriched",
            "alert.rule.name not in ['Noisy rule', 'Other']",
            "not alert.rule.name in ['Cobalt']",
            "1 < alert.urgency.current_value < 80",
            "alert.urgency.current_value - 10 * 2 ** 2 // 3 % 7 > -1",
            "alert.title ~ \"\\n\\u00e9\\\"'\" == 'Beacon \"x\"\\n\u{e9}\"\\''",
            "alert.tags[0] == 'a' and alert.tags[1:] == ['b'] and alert.tags[::-1][0] == 'b'",
            "(alert.missing.field or 'x') == 'x'",
            "alert.custom_status is not defined and alert.urgency.current_value is divisibleby(7)",
            "'yes' if alert.score > 2.0 else 'no'",
            "('yes' if false) is undefined",
            "{'a': 1, 'b': [true, none]}['b'][0] == true",
            "'Beacon' in alert.title and alert.tags|join(',') == 'a,b'",
            "range(3)|list == [0, 1, 2] and dict(a=1).a == 1",
            "alert.urgency.value != none",
            "alert.title is string and alert.custom is not none and not (alert.score == 2.5)",
            "alert.score > -1.5 and -(alert.score) < 0 and (alert.tags|list)[0] == 'a'",
            "alert.missing|default('x') == 'x' and alert.rule.name|lower in ['cobalt']",
            "'🔥 ✓' ~ alert.rule.name == '🔥 ✓Cobalt' and alert.urgency|items|list|length == 2 and range(2)|list|last == 1",
            "alert.tags|select('eq', 'a')|list == ['a'] and 3 is odd and alert.tags is sequence",
        ] {
            let rewritten = rewrite(source).expect("parses");
            let before = eval(&env, source).expect(source);
            let after = eval(&env, &rewritten).unwrap_or_else(|e| panic!("{rewritten}: {e}"));
            assert_eq!(before, after, "{source} → {rewritten}");
        }
    }

    #[test]
    fn an_expression_with_a_keyword_as_a_name_is_kept_as_is() {
        // MiniJinja reads these `not`s as a variable and a function (found by the property
        // test below); printed back elsewhere they would read as the operator.
        for source in [
            "alert.nothing == not -1",
            "-0 is defined == not (alert.urgency.current_value)",
            "alert.urgency.current_value if alert.urgency.current_value else alert.urgency.current_value is defined not in alert.urgency.current_value is defined",
        ] {
            assert_eq!(rewrite(source).unwrap(), source);
        }
    }

    fn arb_expr() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("alert.urgency.current_value".to_string()),
            Just("alert.score".to_string()),
            Just("alert.title".to_string()),
            Just("alert.tags".to_string()),
            Just("alert.nothing".to_string()),
            Just("enriched".to_string()),
            Just("none".to_string()),
            (-100i64..100).prop_map(|n| n.to_string()),
            "[a-z '\"]{0,6}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        ];
        leaf.prop_recursive(4, 32, 3, |inner| {
            let op = prop_oneof![
                Just("=="),
                Just("!="),
                Just("<"),
                Just(">="),
                Just("and"),
                Just("or"),
                Just("+"),
                Just("-"),
                Just("*"),
                Just("~"),
                Just("in"),
                Just("not in"),
            ];
            prop_oneof![
                (inner.clone(), op, inner.clone()).prop_map(|(a, o, b)| format!("{a} {o} {b}")),
                (inner.clone(), op_paren()).prop_map(|(a, p)| if p { format!("({a})") } else { a }),
                inner.clone().prop_map(|a| format!("not {a}")),
                inner.clone().prop_map(|a| format!("-{a}")),
                inner.clone().prop_map(|a| format!("{a}|length")),
                inner.clone().prop_map(|a| format!("{a} is defined")),
                (inner.clone(), inner.clone(), inner.clone())
                    .prop_map(|(a, b, c)| format!("{a} if {b} else {c}")),
                (inner.clone(), inner).prop_map(|(a, b)| format!("[{a}, {b}]")),
            ]
        })
    }

    /// What routing makes of a `when` value (see `compile_when` in routing.rs).
    fn as_routing_reads(v: &Value) -> &'static str {
        if v.is_undefined() {
            "undefined"
        } else if v.is_true() {
            "true"
        } else {
            "false"
        }
    }

    fn op_paren() -> impl proptest::strategy::Strategy<Value = bool> {
        proptest::bool::ANY
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// On any expression, the rewrite answers what the original answers as routing reads
        /// it (undefined, true or false: `none and x` may give `none` or `false`, both false),
        /// unless it found two types compared (then it errors on purpose).
        #[test]
        fn rewriting_keeps_the_meaning_of_any_expression(source in arb_expr()) {
            let env = env();
            if env.compile_expression(&source).is_err() {
                return Ok(());
            }
            let rewritten = rewrite(&source).expect("what compiles parses");
            let before = eval(&env, &source);
            let after = eval(&env, &rewritten);
            match (before, after) {
                (Ok(b), Ok(a)) => proptest::prop_assert_eq!(
                    as_routing_reads(&b),
                    as_routing_reads(&a),
                    "{} → {}: {:?} vs {:?}",
                    source,
                    rewritten,
                    b,
                    a
                ),
                (_, Err(e)) if e.to_string().contains("compares") => {}
                (Err(_), Err(_)) => {}
                (b, a) => proptest::prop_assert!(false, "{} → {}: {:?} vs {:?}", source, rewritten, b, a),
            }
        }
    }

    #[test]
    fn comparisons_of_different_types_are_errors() {
        let env = env();
        for (source, why) in [
            (
                "alert.urgency.current_value >= '50'",
                "a number with a string",
            ),
            ("alert.rule.name == 42", "a string with a number"),
            ("alert.title > 5", "a string with a number"),
            ("enriched == 'true'", "a boolean with a string"),
            ("alert.tags == 'a'", "a list with a string"),
            (
                "event.type == 'alert' and alert.urgency.value < '80'",
                "a number with a string",
            ),
        ] {
            let err = eval(&env, &rewrite(source).expect("parses")).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(why), "{source}: {msg}");
        }
        // Missing fields and none stay comparable with anything.
        for source in [
            "alert.nothing == 5",
            "alert.nothing.deeper >= '5'",
            "alert.rule.name != none",
            "none == 3",
        ] {
            assert!(eval(&env, &rewrite(source).unwrap()).is_ok(), "{source}");
        }
    }

    #[test]
    fn the_error_names_the_comparison() {
        let env = env();
        let err = eval(
            &env,
            &rewrite("alert.urgency.current_value >= '50'").unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`alert.urgency.current_value >= \"50\"` compares a number with a string"),
            "{err}"
        );
    }

    #[test]
    fn collecting_mode_records_every_mismatch_and_goes_on() {
        let env = env();
        let source = rewrite("alert.title == 1 or alert.urgency.value > '5'").unwrap();
        let text = format!("{{{{ {source} }}}}");
        let tmpl = env.template_from_str(&text).unwrap();
        let mut c: serde_json::Value = serde_json::to_value(ctx()).unwrap();
        c[COLLECT_VAR] = serde_json::json!(true);
        let captured = tmpl
            .render_captured(&c)
            .expect("no error in collecting mode");
        let found: Vec<String> = captured
            .state()
            .get_temp(MISMATCHES_TEMP)
            .unwrap()
            .try_iter()
            .unwrap()
            .map(|v| v.to_string())
            .collect();
        assert_eq!(found.len(), 2, "{found:?}");
    }

    #[test]
    fn mismatch_policy() {
        let n = Value::from(1);
        let s = Value::from("1");
        assert!(mismatch(&n, &s).is_some());
        assert!(mismatch(&n, &Value::from(1.5)).is_none());
        assert!(mismatch(&s, &Value::from("x")).is_none());
        assert!(mismatch(&n, &Value::from(())).is_none());
        assert!(mismatch(&Value::UNDEFINED, &s).is_none());
    }
}
