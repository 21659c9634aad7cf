//! Kubernetes label-selector strings (`app=xwing,tier in (a,b),!canary`), the syntax of the
//! `labels` field of a GetEvents `Filter`, parsed into kube's [`Selector`], which does the
//! matching.
//!
//! kube only builds selectors from `LabelSelector` objects and prints them as strings; it has
//! no parser for the string form, so the grammar of Kubernetes' `labels.Parse` is read here:
//! requirements separated by `,` (all must hold), each one of `key`, `!key`, `key=value`,
//! `key==value`, `key!=value`, `key in (v1,v2)`, `key notin (v1,v2)`. An empty string selects
//! everything. `key>n`/`key<n` are valid Kubernetes syntax that kube cannot express; they are
//! rejected rather than silently dropped.

use std::collections::BTreeSet;

use kube::core::{Expression, Selector};

/// Why a selector string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelSelectorError {
    #[error("expected {expected} at {at:?}")]
    Syntax { expected: &'static str, at: String },
    #[error("invalid label key {0:?}")]
    Key(String),
    #[error("invalid label value {0:?}")]
    Value(String),
    #[error("operator {0:?} needs at least one value")]
    EmptySet(&'static str),
    #[error("numeric comparison (`>`, `<`) on {0:?} is not supported")]
    Numeric(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    In,
    NotIn,
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    Comma,
    Open,
    Close,
}

impl Token {
    fn text(&self) -> String {
        match self {
            Token::Ident(s) => s.clone(),
            Token::In => "in".into(),
            Token::NotIn => "notin".into(),
            Token::Bang => "!".into(),
            Token::Eq => "=".into(),
            Token::DoubleEq => "==".into(),
            Token::NotEq => "!=".into(),
            Token::Gt => ">".into(),
            Token::Lt => "<".into(),
            Token::Comma => ",".into(),
            Token::Open => "(".into(),
            Token::Close => ")".into(),
        }
    }
}

/// Characters that end an identifier (as in Kubernetes' lexer), besides whitespace.
fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | ',' | '(' | ')' | '<' | '>')
}

fn lex(s: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if is_special(c) {
            chars.next();
            let next_is_eq = chars.peek() == Some(&'=');
            let tok = match (c, next_is_eq) {
                ('!', true) => Token::NotEq,
                ('=', true) => Token::DoubleEq,
                ('!', false) => Token::Bang,
                ('=', false) => Token::Eq,
                (',', _) => Token::Comma,
                ('(', _) => Token::Open,
                (')', _) => Token::Close,
                ('<', _) => Token::Lt,
                _ => Token::Gt,
            };
            if matches!(tok, Token::NotEq | Token::DoubleEq) {
                chars.next();
            }
            out.push(tok);
            continue;
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || is_special(c) {
                break;
            }
            word.push(c);
            chars.next();
        }
        out.push(match word.as_str() {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Ident(word),
        });
    }
    out
}

/// A label name: at most 63 characters, alphanumeric at both ends, `-`, `_`, `.` inside.
fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A DNS subdomain (the optional prefix of a key): lower-case labels joined by dots.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

fn key(s: &str) -> Result<String, LabelSelectorError> {
    let ok = match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name(name),
        None => is_name(s),
    };
    ok.then(|| s.to_owned())
        .ok_or_else(|| LabelSelectorError::Key(s.to_owned()))
}

fn value(s: &str) -> Result<String, LabelSelectorError> {
    (s.is_empty() || is_name(s))
        .then(|| s.to_owned())
        .ok_or_else(|| LabelSelectorError::Value(s.to_owned()))
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn error(&self, expected: &'static str) -> LabelSelectorError {
        LabelSelectorError::Syntax {
            expected,
            at: self.peek().map(Token::text).unwrap_or_default(),
        }
    }

    fn ident(&mut self, expected: &'static str) -> Result<String, LabelSelectorError> {
        match self.peek() {
            Some(Token::Ident(s)) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.error(expected)),
        }
    }

    /// A value after `=`, `==` or `!=`: absent (end or `,`) means the empty value.
    fn single_value(&mut self) -> Result<String, LabelSelectorError> {
        match self.peek() {
            None | Some(Token::Comma) => Ok(String::new()),
            _ => value(&self.ident("a value")?),
        }
    }

    /// `( v1, v2, ... )`; an empty slot between commas is the empty value.
    fn value_set(&mut self, op: &'static str) -> Result<BTreeSet<String>, LabelSelectorError> {
        if self.next() != Some(Token::Open) {
            self.pos -= 1;
            return Err(self.error("'('"));
        }
        let mut values = BTreeSet::new();
        if self.peek() == Some(&Token::Close) {
            return Err(LabelSelectorError::EmptySet(op));
        }
        loop {
            match self.peek() {
                Some(Token::Ident(_)) => {
                    let v = self.ident("a value")?;
                    values.insert(value(&v)?);
                }
                Some(Token::Comma | Token::Close) => {
                    values.insert(String::new());
                }
                _ => return Err(self.error("a value, ',' or ')'")),
            }
            match self.next() {
                Some(Token::Comma) => continue,
                Some(Token::Close) => return Ok(values),
                _ => {
                    self.pos -= 1;
                    return Err(self.error("',' or ')'"));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Expression, LabelSelectorError> {
        if self.peek() == Some(&Token::Bang) {
            self.pos += 1;
            return Ok(Expression::DoesNotExist(key(&self.ident("a key")?)?));
        }
        let k = key(&self.ident("a key")?)?;
        Ok(match self.peek() {
            None | Some(Token::Comma) => Expression::Exists(k),
            Some(Token::Eq | Token::DoubleEq) => {
                self.pos += 1;
                Expression::Equal(k, self.single_value()?)
            }
            Some(Token::NotEq) => {
                self.pos += 1;
                Expression::NotEqual(k, self.single_value()?)
            }
            Some(Token::In) => {
                self.pos += 1;
                Expression::In(k, self.value_set("in")?)
            }
            Some(Token::NotIn) => {
                self.pos += 1;
                Expression::NotIn(k, self.value_set("notin")?)
            }
            Some(Token::Gt | Token::Lt) => return Err(LabelSelectorError::Numeric(k)),
            Some(_) => return Err(self.error("an operator")),
        })
    }
}

/// Parses a Kubernetes label-selector string.
pub fn parse(s: &str) -> Result<Selector, LabelSelectorError> {
    let mut p = Parser {
        tokens: lex(s),
        pos: 0,
    };
    let mut exprs = Vec::new();
    if p.peek().is_none() {
        return Ok(Selector::default());
    }
    loop {
        exprs.push(p.requirement()?);
        match p.next() {
            None => return Ok(exprs.into_iter().collect()),
            Some(Token::Comma) => {}
            Some(_) => {
                p.pos -= 1;
                return Err(p.error("','"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kube::core::SelectorExt as _;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn matches(sel: &str, pairs: &[(&str, &str)]) -> bool {
        parse(sel).unwrap().matches(&labels(pairs))
    }

    #[test]
    fn every_operator_parses_to_kubes_expression() {
        let parsed = |s: &str| parse(s).unwrap().to_string();
        assert_eq!(parsed("app=xwing"), "app=xwing");
        assert_eq!(parsed("app == xwing"), "app=xwing");
        assert_eq!(parsed("app!=xwing"), "app!=xwing");
        assert_eq!(parsed("tier in (a, b)"), "tier in (a,b)");
        assert_eq!(parsed("tier notin (b,a)"), "tier notin (a,b)");
        assert_eq!(parsed("canary"), "canary");
        assert_eq!(parsed(" ! canary "), "!canary");
        assert_eq!(
            parsed("app.kubernetes.io/name=xwing,org in (alliance),!canary"),
            "app.kubernetes.io/name=xwing,org in (alliance),!canary"
        );
        assert_eq!(parsed("app="), "app=");
        assert_eq!(parsed("x in (a,,b)"), "x in (,a,b)");
    }

    #[test]
    fn requirements_are_anded_and_follow_kubernetes_semantics() {
        let xwing = [("app", "xwing"), ("org", "alliance")];
        assert!(matches("app=xwing", &xwing));
        assert!(!matches("app=tiefighter", &xwing));
        assert!(matches("app=xwing,org in (alliance,empire)", &xwing));
        assert!(!matches("app=xwing,org notin (alliance)", &xwing));
        // A missing key satisfies `!=` and `notin`, and `!key`.
        assert!(matches("tier!=db,tier notin (db),!tier", &xwing));
        assert!(!matches("tier", &xwing));
        assert!(matches("", &xwing), "the empty selector selects everything");
        assert!(matches("app=", &[("app", "")]));
    }

    #[test]
    fn malformed_selectors_are_errors() {
        for bad in [
            "app=xwing,",
            ",app",
            "app in a,b",
            "app in (a b)",
            "app in (a",
            "app xwing",
            "=xwing",
            "app=x=y",
            "app=(x)",
        ] {
            assert!(
                matches!(parse(bad), Err(LabelSelectorError::Syntax { .. })),
                "{bad:?}: {:?}",
                parse(bad)
            );
        }
        assert_eq!(parse("app in ()"), Err(LabelSelectorError::EmptySet("in")));
        assert_eq!(parse("-app=x"), Err(LabelSelectorError::Key("-app".into())));
        assert_eq!(
            parse("Example.COM/app=x"),
            Err(LabelSelectorError::Key("Example.COM/app".into()))
        );
        assert_eq!(
            parse("app=x!"),
            Err(LabelSelectorError::Syntax {
                expected: "','",
                at: "!".into()
            })
        );
        assert_eq!(
            parse(&format!("app={}", "v".repeat(64))),
            Err(LabelSelectorError::Value("v".repeat(64)))
        );
        assert_eq!(
            parse("replicas>3"),
            Err(LabelSelectorError::Numeric("replicas".into()))
        );
    }
}
