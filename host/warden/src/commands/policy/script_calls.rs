//! Reading a Rhai script's cmdlet calls without running it: every `exo::invoke`,
//! `exo::stream` and `exo::for_each` in its syntax tree (function bodies included), with the
//! cmdlet and parameter names and any literal values.
//!
//! A call whose cmdlet is not a string literal cannot be read statically: it is reported (with
//! its line) and left out of the draft, so the operator adds it by hand. Parameters given as a
//! variable rather than a `#{…}` literal are reported the same way; their cmdlet is kept.

use super::draft::{CmdletNeeds, Needs, ValueNeeds};
use anyhow::bail;
use rhai::{ASTNode, Engine, Expr, Stmt};
use serde_json::Value;

/// The script functions that call a cmdlet: name and whether a closure comes last.
const CALLS: &[(&str, bool)] = &[("invoke", false), ("stream", false), ("for_each", true)];

/// The cmdlets and parameters `source` calls, as far as they can be read statically.
pub(super) fn read(what: &str, source: &str) -> anyhow::Result<Needs> {
    let mut engine = Engine::new_raw();
    // The runtime's nesting limits: any script it runs can be read here, and a hostile one
    // nested deeper is refused before the parser's recursion can overflow this thread's stack.
    engine.set_max_expr_depths(
        warden_runtime::script::MAX_EXPR_DEPTH,
        warden_runtime::script::MAX_FN_EXPR_DEPTH,
    );
    let ast = match engine.compile(source) {
        Ok(ast) => ast,
        Err(e) => bail!(
            "{what}: the script does not parse: {e}\n  fix: correct it (`warden script` \
             reports the same error)"
        ),
    };
    let mut needs = Needs::default();
    ast.walk(&mut |path: &[ASTNode]| {
        // A call is an expression, or a statement when its value is not used.
        let call = match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, position)))
            | Some(ASTNode::Stmt(Stmt::FnCall(call, position))) => Some((call, position)),
            _ => None,
        };
        if let Some((call, position)) = call
            && call.namespace.path.len() == 1
            && call.namespace.root() == "exo"
            && let Some((name, closure_last)) =
                CALLS.iter().find(|(name, _)| call.name.as_str() == *name)
        {
            let line = position.line().unwrap_or(0);
            let args: Vec<&Expr> = call.args.iter().collect();
            let params = match (args.len(), closure_last) {
                (2, true) | (1, _) => None,
                (_, _) => args.get(1).copied(),
            };
            match args.first().and_then(|e| literal(e)) {
                Some(Value::String(cmdlet)) => {
                    let entry = needs.cmdlets.entry(cmdlet.clone()).or_default();
                    read_parameters(&mut needs.unreadable, line, &cmdlet, params, entry);
                }
                _ => needs.unreadable.push(format!(
                    "line {line}: exo::{name}'s cmdlet is not a string literal, so the draft \
                     does not grant it: add its role entry by hand"
                )),
            }
        }
        true
    });
    Ok(needs)
}

fn read_parameters(
    unreadable: &mut Vec<String>,
    line: usize,
    cmdlet: &str,
    params: Option<&Expr>,
    entry: &mut CmdletNeeds,
) {
    match params {
        None => {}
        Some(Expr::Map(map, _)) => {
            for (name, value) in &map.0 {
                let slot = entry
                    .parameters
                    .entry(name.name.to_string())
                    .or_insert_with(|| ValueNeeds::Literals(Vec::new()));
                match (literal(value), &mut *slot) {
                    (Some(v), ValueNeeds::Literals(seen)) => {
                        if !seen.contains(&v) {
                            seen.push(v);
                        }
                    }
                    _ => *slot = ValueNeeds::Any,
                }
            }
        }
        // A map of constants arrives folded into one constant.
        Some(other) if let Some(Value::Object(map)) = literal(other) => {
            for (name, value) in map {
                let slot = entry
                    .parameters
                    .entry(name)
                    .or_insert_with(|| ValueNeeds::Literals(Vec::new()));
                if let ValueNeeds::Literals(seen) = slot
                    && !seen.contains(&value)
                {
                    seen.push(value);
                }
            }
        }
        Some(_) => unreadable.push(format!(
            "line {line}: the parameters of {cmdlet} are not a #{{…}} literal, so the draft \
             grants {cmdlet} with no parameters: add the ones it passes by hand"
        )),
    }
}

/// A constant expression as JSON (strings, numbers, booleans, and lists and maps of them).
fn literal(expr: &Expr) -> Option<Value> {
    match expr {
        Expr::Map(map, _) => {
            let mut object = serde_json::Map::new();
            for (name, value) in &map.0 {
                object.insert(name.name.to_string(), literal(value)?);
            }
            Some(Value::Object(object))
        }
        Expr::Array(items, _) => items
            .iter()
            .map(literal)
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
        other => {
            let value = other.get_literal_value(None)?;
            if value.is_unit() {
                return None;
            }
            rhai::serde::from_dynamic::<Value>(&value).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_literal_calls_and_reports_the_rest() {
        let needs = read(
            "t.rhai",
            r#"
            let m = exo::invoke("Get-Mailbox", #{RecipientTypeDetails: "SharedMailbox", ResultSize: 500});
            for x in m { exo::invoke("Get-MailboxPermission", #{Identity: x.PrimarySmtpAddress}); }
            fn helper(p) { exo::stream("Get-Recipient", p) }
            exo::for_each("Get-Mailbox", |o| o);
            let name = "Get-User";
            exo::invoke(name);
            "#,
        )
        .unwrap();
        let mailbox = &needs.cmdlets["Get-Mailbox"];

        assert!(matches!(
            &mailbox.parameters["RecipientTypeDetails"],
            ValueNeeds::Literals(v) if v == &[Value::from("SharedMailbox")]
        ));
        assert!(matches!(
            &needs.cmdlets["Get-MailboxPermission"].parameters["Identity"],
            ValueNeeds::Any
        ));
        assert!(needs.cmdlets["Get-Recipient"].parameters.is_empty());
        assert_eq!(needs.unreadable.len(), 2, "{:?}", needs.unreadable);
        assert!(
            needs
                .unreadable
                .iter()
                .any(|u| u.contains("not a string literal"))
        );
        assert!(needs.unreadable.iter().any(|u| u.contains("Get-Recipient")));
    }
}
