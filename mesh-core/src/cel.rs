//! The part of CEL that Telemetry `accessLogging[].filter.expression` is written in, as
//! Envoy's access-log expression filter evaluates it: Envoy's request, response, upstream
//! and connection attributes that an access log line knows, integer, string and boolean
//! literals, `==` `!=` `<` `<=` `>` `>=`, `!`, `&&`, `||` and parentheses, and
//! `request.headers['name']`. What is outside it is refused when the expression is parsed
//! (at load time, naming the field), never ignored.
//!
//! As in CEL, `&&` and `||` absorb an error on one side when the other decides (`false &&
//! error` is false, `true || error` is true); a missing attribute (a header the request did
//! not carry, no upstream) is an error; an expression that ends in an error or is not a
//! boolean does not pass (Envoy then writes no line).

use std::fmt;

/// An attribute the expression reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Attr {
    /// `request.method`
    Method,
    /// `request.path`: the path with its query.
    Path,
    /// `request.url_path`: the path without the query.
    UrlPath,
    /// `request.host`
    Host,
    /// `request.scheme`
    Scheme,
    /// `request.protocol`: `HTTP/1.1`, `HTTP/2`.
    Protocol,
    /// `request.useragent`
    UserAgent,
    /// `request.id`: `x-request-id`.
    RequestId,
    /// `request.size`: request body bytes.
    RequestSize,
    /// `request.headers['name']` (names lower-cased).
    RequestHeader(String),
    /// `response.code`
    Code,
    /// `response.size`: response body bytes.
    ResponseSize,
    /// `upstream.address`: the endpoint (`ip:port`).
    UpstreamAddress,
    /// `connection.mtls`: the downstream connection is mutual TLS.
    Mtls,
}

impl Attr {
    fn named(path: &str) -> Option<(Attr, Type)> {
        Some(match path {
            "request.method" => (Attr::Method, Type::Str),
            "request.path" => (Attr::Path, Type::Str),
            "request.url_path" => (Attr::UrlPath, Type::Str),
            "request.host" => (Attr::Host, Type::Str),
            "request.scheme" => (Attr::Scheme, Type::Str),
            "request.protocol" => (Attr::Protocol, Type::Str),
            "request.useragent" => (Attr::UserAgent, Type::Str),
            "request.id" => (Attr::RequestId, Type::Str),
            "request.size" => (Attr::RequestSize, Type::Int),
            "response.code" => (Attr::Code, Type::Int),
            "response.size" => (Attr::ResponseSize, Type::Int),
            "upstream.address" => (Attr::UpstreamAddress, Type::Str),
            "connection.mtls" => (Attr::Mtls, Type::Bool),
            _ => return None,
        })
    }
}

/// A value an attribute or a literal has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
}

/// What an evaluation reads its attributes from (an access log entry).
pub trait Attributes {
    /// The attribute's value; `None` when the request has none (an error in CEL).
    fn attr(&self, a: &Attr) -> Option<Value>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Type {
    Int,
    Str,
    Bool,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Int => "int",
            Type::Str => "string",
            Type::Bool => "bool",
        })
    }
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    Lit(Value),
    Attr(Attr),
    Not(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cmp(Op, Box<Node>, Box<Node>),
}

/// A parsed, type-checked expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    root: Node,
    source: String,
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Deeper nesting than this is refused (a hostile file cannot overflow the stack).
const MAX_DEPTH: usize = 64;

/// Why an expression does not parse or type-check: what, and at which offset.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

impl Expr {
    /// Parse and type-check `source`; the error says where and what.
    pub fn parse(source: &str) -> Result<Expr, ParseError> {
        Self::parse_checked(source).map_err(ParseError)
    }

    fn parse_checked(source: &str) -> Result<Expr, String> {
        let tokens = lex(source)?;
        let mut p = Parser { tokens, at: 0, depth: 0 };
        let (root, ty) = p.or()?;
        if let Some((t, pos)) = p.tokens.get(p.at) {
            return Err(format!("unexpected {t} at offset {pos}"));
        }
        if ty != Type::Bool {
            return Err(format!("the expression is {ty}, not bool"));
        }
        Ok(Expr { root, source: source.to_string() })
    }

    /// Whether the expression holds for `attrs` (an error or a non-boolean does not).
    pub fn eval(&self, attrs: &impl Attributes) -> bool {
        eval(&self.root, attrs) == Some(Value::Bool(true))
    }

    /// The request headers the expression reads (lower-cased), to be kept for it.
    pub fn request_headers(&self) -> Vec<String> {
        fn walk(n: &Node, out: &mut Vec<String>) {
            match n {
                Node::Attr(Attr::RequestHeader(h)) if !out.contains(h) => out.push(h.clone()),
                Node::Lit(_) | Node::Attr(_) => {}
                Node::Not(a) => walk(a, out),
                Node::And(a, b) | Node::Or(a, b) | Node::Cmp(_, a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }
}

fn eval(n: &Node, attrs: &impl Attributes) -> Option<Value> {
    match n {
        Node::Lit(v) => Some(v.clone()),
        Node::Attr(a) => attrs.attr(a),
        Node::Not(a) => match eval(a, attrs)? {
            Value::Bool(b) => Some(Value::Bool(!b)),
            _ => None,
        },
        Node::And(a, b) => match (eval(a, attrs), eval(b, attrs)) {
            (Some(Value::Bool(false)), _) | (_, Some(Value::Bool(false))) => Some(Value::Bool(false)),
            (Some(Value::Bool(true)), Some(Value::Bool(true))) => Some(Value::Bool(true)),
            _ => None,
        },
        Node::Or(a, b) => match (eval(a, attrs), eval(b, attrs)) {
            (Some(Value::Bool(true)), _) | (_, Some(Value::Bool(true))) => Some(Value::Bool(true)),
            (Some(Value::Bool(false)), Some(Value::Bool(false))) => Some(Value::Bool(false)),
            _ => None,
        },
        Node::Cmp(op, a, b) => {
            let ord = match (eval(a, attrs)?, eval(b, attrs)?) {
                (Value::Int(x), Value::Int(y)) => x.cmp(&y),
                (Value::Str(x), Value::Str(y)) => x.cmp(&y),
                (Value::Bool(x), Value::Bool(y)) => x.cmp(&y),
                _ => return None,
            };
            use std::cmp::Ordering::*;
            Some(Value::Bool(match op {
                Op::Eq => ord == Equal,
                Op::Ne => ord != Equal,
                Op::Lt => ord == Less,
                Op::Le => ord != Greater,
                Op::Gt => ord == Greater,
                Op::Ge => ord != Less,
            }))
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Int(i64),
    Str(String),
    Ident(String),
    Dot,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Not,
    And,
    Or,
    Cmp(Op),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Int(i) => write!(f, "{i}"),
            Token::Str(s) => write!(f, "{s:?}"),
            Token::Ident(s) => write!(f, "`{s}`"),
            Token::Dot => f.write_str("`.`"),
            Token::LParen => f.write_str("`(`"),
            Token::RParen => f.write_str("`)`"),
            Token::LBracket => f.write_str("`[`"),
            Token::RBracket => f.write_str("`]`"),
            Token::Not => f.write_str("`!`"),
            Token::And => f.write_str("`&&`"),
            Token::Or => f.write_str("`||`"),
            Token::Cmp(op) => write!(f, "`{}`", op_str(*op)),
        }
    }
}

fn op_str(op: Op) -> &'static str {
    match op {
        Op::Eq => "==",
        Op::Ne => "!=",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
    }
}

fn lex(s: &str) -> Result<Vec<(Token, usize)>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let two = b.get(i + 1).copied();
        let tok = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'.' => Token::Dot,
            b'(' => Token::LParen,
            b')' => Token::RParen,
            b'[' => Token::LBracket,
            b']' => Token::RBracket,
            b'&' if two == Some(b'&') => {
                i += 1;
                Token::And
            }
            b'|' if two == Some(b'|') => {
                i += 1;
                Token::Or
            }
            b'=' if two == Some(b'=') => {
                i += 1;
                Token::Cmp(Op::Eq)
            }
            b'!' if two == Some(b'=') => {
                i += 1;
                Token::Cmp(Op::Ne)
            }
            b'!' => Token::Not,
            b'<' | b'>' => {
                let eq = two == Some(b'=');
                if eq {
                    i += 1;
                }
                Token::Cmp(match (c, eq) {
                    (b'<', false) => Op::Lt,
                    (b'<', true) => Op::Le,
                    (_, false) => Op::Gt,
                    (_, true) => Op::Ge,
                })
            }
            b'\'' | b'"' => {
                let mut text = String::new();
                i += 1;
                loop {
                    let Some(&d) = b.get(i) else {
                        return Err(format!("unterminated string at offset {start}"));
                    };
                    if d == c {
                        break;
                    }
                    if d == b'\\' {
                        let escaped = b.get(i + 1).copied();
                        match escaped {
                            Some(e @ (b'\\' | b'\'' | b'"')) => text.push(char::from(e)),
                            Some(b'n') => text.push('\n'),
                            Some(b't') => text.push('\t'),
                            _ => return Err(format!("unsupported escape in the string at offset {start}")),
                        }
                        i += 2;
                        continue;
                    }
                    // A multi-byte character: copy it whole.
                    let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
                    text.push(ch);
                    i += ch.len_utf8();
                }
                Token::Str(text)
            }
            b'0'..=b'9' => {
                while b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                let n = s[start..=i].parse().map_err(|_| format!("integer at offset {start} is too large"))?;
                Token::Int(n)
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while b.get(i + 1).is_some_and(|d| d.is_ascii_alphanumeric() || *d == b'_') {
                    i += 1;
                }
                Token::Ident(s[start..=i].to_string())
            }
            _ => {
                let ch = s[i..].chars().next().unwrap_or('?');
                return Err(format!("unexpected character {ch:?} at offset {start}"));
            }
        };
        out.push((tok, start));
        i += 1;
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(t, _)| t)
    }

    fn next(&mut self) -> Result<(Token, usize), String> {
        let t = self.tokens.get(self.at).cloned().ok_or_else(|| "unexpected end of the expression".to_string())?;
        self.at += 1;
        Ok(t)
    }

    fn bool_operand(ty: Type, what: &str, pos: usize) -> Result<(), String> {
        if ty == Type::Bool { Ok(()) } else { Err(format!("{what} needs bool operands, got {ty} at offset {pos}")) }
    }

    fn pos(&self) -> usize {
        self.tokens.get(self.at).map_or_else(|| self.tokens.last().map_or(0, |(_, p)| *p), |(_, p)| *p)
    }

    fn or(&mut self) -> Result<(Node, Type), String> {
        self.binary(&Token::Or, "`||`", Self::and, Node::Or)
    }

    fn and(&mut self) -> Result<(Node, Type), String> {
        self.binary(&Token::And, "`&&`", Self::unary, Node::And)
    }

    /// `operand (op operand)*`, left-associative, bool operands only when `op` is there.
    fn binary(
        &mut self,
        op: &Token,
        what: &str,
        operand: fn(&mut Self) -> Result<(Node, Type), String>,
        make: fn(Box<Node>, Box<Node>) -> Node,
    ) -> Result<(Node, Type), String> {
        let pos = self.pos();
        let (mut node, ty) = operand(self)?;
        while self.peek() == Some(op) {
            Self::bool_operand(ty, what, pos)?;
            self.at += 1;
            let pos = self.pos();
            let (rhs, rty) = operand(self)?;
            Self::bool_operand(rty, what, pos)?;
            node = make(Box::new(node), Box::new(rhs));
        }
        Ok((node, ty))
    }

    fn unary(&mut self) -> Result<(Node, Type), String> {
        if self.peek() == Some(&Token::Not) {
            self.at += 1;
            let pos = self.pos();
            let (n, ty) = self.nested(Self::unary)?;
            Self::bool_operand(ty, "`!`", pos)?;
            return Ok((Node::Not(Box::new(n)), Type::Bool));
        }
        let pos = self.pos();
        let (lhs, lty) = self.primary()?;
        let Some(Token::Cmp(op)) = self.peek().cloned() else { return Ok((lhs, lty)) };
        self.at += 1;
        let (rhs, rty) = self.primary()?;
        if lty != rty {
            return Err(format!("`{}` compares {lty} with {rty} at offset {pos}", op_str(op)));
        }
        if lty == Type::Bool && !matches!(op, Op::Eq | Op::Ne) {
            return Err(format!("`{}` does not order bools (offset {pos})", op_str(op)));
        }
        if let Some(Token::Cmp(_)) = self.peek() {
            return Err(format!("comparisons do not chain (offset {})", self.pos()));
        }
        Ok((Node::Cmp(op, Box::new(lhs), Box::new(rhs)), Type::Bool))
    }

    fn nested(&mut self, f: fn(&mut Self) -> Result<(Node, Type), String>) -> Result<(Node, Type), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("the expression nests deeper than {MAX_DEPTH}"));
        }
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn primary(&mut self) -> Result<(Node, Type), String> {
        let (tok, pos) = self.next()?;
        match tok {
            Token::Int(i) => Ok((Node::Lit(Value::Int(i)), Type::Int)),
            Token::Str(s) => Ok((Node::Lit(Value::Str(s)), Type::Str)),
            Token::Ident(id) if id == "true" || id == "false" => Ok((Node::Lit(Value::Bool(id == "true")), Type::Bool)),
            Token::LParen => {
                let inner = self.nested(Self::or)?;
                match self.next()? {
                    (Token::RParen, _) => Ok(inner),
                    (t, p) => Err(format!("expected `)` at offset {p}, got {t}")),
                }
            }
            Token::Ident(first) => {
                let mut path = first;
                while self.peek() == Some(&Token::Dot) {
                    self.at += 1;
                    match self.next()? {
                        (Token::Ident(part), _) => {
                            path.push('.');
                            path.push_str(&part);
                        }
                        (t, p) => return Err(format!("expected a name after `.` at offset {p}, got {t}")),
                    }
                }
                if path == "request.headers" {
                    let bad = || format!("request.headers at offset {pos} takes ['name']");
                    let mut next = || self.next().map(|(t, _)| t).map_err(|_| bad());
                    let key = match (next()?, next()?, next()?) {
                        (Token::LBracket, Token::Str(k), Token::RBracket) => k,
                        _ => return Err(bad()),
                    };
                    return Ok((Node::Attr(Attr::RequestHeader(key.to_ascii_lowercase())), Type::Str));
                }
                if self.peek() == Some(&Token::LParen) {
                    return Err(format!("function calls ({path}(...) at offset {pos}) are not supported"));
                }
                match Attr::named(&path) {
                    Some((a, ty)) => Ok((Node::Attr(a), ty)),
                    None => Err(format!(
                        "unknown attribute `{path}` at offset {pos} (known: request.method, request.path, request.url_path, request.host, request.scheme, request.protocol, request.useragent, request.id, request.size, request.headers['name'], response.code, response.size, upstream.address, connection.mtls)"
                    )),
                }
            }
            t => Err(format!("unexpected {t} at offset {pos}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Attrs(HashMap<Attr, Value>);

    impl Attributes for Attrs {
        fn attr(&self, a: &Attr) -> Option<Value> {
            self.0.get(a).cloned()
        }
    }

    fn attrs(code: i64) -> Attrs {
        Attrs(HashMap::from([
            (Attr::Code, Value::Int(code)),
            (Attr::Method, Value::Str("GET".into())),
            (Attr::UrlPath, Value::Str("/productpage".into())),
            (Attr::RequestHeader("end-user".into()), Value::Str("jason".into())),
            (Attr::Mtls, Value::Bool(true)),
        ]))
    }

    #[test]
    fn istio_s_examples_and_the_operators() {
        let yes = |e: &str, code: i64| Expr::parse(e).unwrap().eval(&attrs(code));
        assert!(yes("response.code >= 400", 503));
        assert!(!yes("response.code >= 400", 200));
        assert!(yes("response.code >= 400 || request.method == 'POST'", 500));
        assert!(yes("request.headers['End-User'] == \"jason\" && !(response.code < 300)", 404));
        assert!(yes("request.url_path != '/login' && connection.mtls == true", 200));
        assert!(yes("((response.code == 200))", 200));
        assert!(yes("true", 0));
        // A missing attribute is an error: the line is not written, unless `||`/`&&` decide.
        assert!(!yes("upstream.address == '10.0.0.1:80'", 200));
        assert!(!yes("!(upstream.address == '10.0.0.1:80')", 200));
        assert!(yes("upstream.address == 'x' || response.code == 200", 200));
        assert!(!yes("upstream.address == 'x' && response.code == 200", 200));
        assert!(!yes("upstream.address == 'x' && response.code == 500", 200), "false && error is false");
        assert_eq!(
            Expr::parse("request.headers['x-a'] == 'b' || request.headers['X-A'] == 'c'").unwrap().request_headers(),
            ["x-a"]
        );
    }

    #[test]
    fn what_is_outside_the_subset_is_refused_with_where() {
        for (e, want) in [
            ("response.code >= '400'", "`>=` compares int with string at offset 0"),
            ("response.code", "the expression is int, not bool"),
            ("response.flags == 1", "unknown attribute `response.flags` at offset 0"),
            ("size(request.path) > 1", "function calls (size(...) at offset 0) are not supported"),
            ("response.code == 200 &&", "unexpected end of the expression"),
            ("response.code = 200", "unexpected character '=' at offset 14"),
            ("request.path == 'x", "unterminated string at offset 16"),
            ("1 < 2 < 3", "comparisons do not chain"),
            ("response.code >= 400 || 1", "`||` needs bool operands, got int at offset 24"),
            ("true < false", "does not order bools"),
            ("request.headers.x == 'y'", "unknown attribute `request.headers.x`"),
            ("request.headers == 'y'", "takes ['name']"),
            ("(true", "unexpected end of the expression"),
            ("response.code == 99999999999999999999", "too large"),
        ] {
            let err = Expr::parse(e).unwrap_err().to_string();
            assert!(err.contains(want), "{e}: {err}");
        }
        let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
        assert!(Expr::parse(&deep).unwrap_err().to_string().contains("nests deeper than 64"));
        let nots = format!("{}true", "!".repeat(200));
        assert!(Expr::parse(&nots).unwrap_err().to_string().contains("nests deeper than 64"));
    }

    /// A reference model: expressions over `response.code`, a header that may be missing,
    /// and literals, evaluated directly with CEL's error absorption, against the parser
    /// and evaluator of the rendered text.
    #[derive(Clone, Debug)]
    enum Model {
        Code(u8, i64),
        Header(bool, &'static str),
        Lit(bool),
        Not(Box<Model>),
        And(Box<Model>, Box<Model>),
        Or(Box<Model>, Box<Model>),
    }

    const OPS: [&str; 6] = ["==", "!=", "<", "<=", ">", ">="];

    impl Model {
        fn render(&self) -> String {
            match self {
                Model::Code(op, n) => format!("response.code {} {n}", OPS[usize::from(*op)]),
                Model::Header(eq, v) => format!("request.headers['x-user'] {} '{v}'", if *eq { "==" } else { "!=" }),
                Model::Lit(b) => b.to_string(),
                Model::Not(a) => format!("!({})", a.render()),
                Model::And(a, b) => format!("({}) && ({})", a.render(), b.render()),
                Model::Or(a, b) => format!("({}) || ({})", a.render(), b.render()),
            }
        }

        /// `None`: an error.
        fn eval(&self, code: i64, user: Option<&str>) -> Option<bool> {
            match self {
                Model::Code(op, n) => Some(match op {
                    0 => code == *n,
                    1 => code != *n,
                    2 => code < *n,
                    3 => code <= *n,
                    4 => code > *n,
                    _ => code >= *n,
                }),
                Model::Header(eq, v) => user.map(|u| (u == *v) == *eq),
                Model::Lit(b) => Some(*b),
                Model::Not(a) => a.eval(code, user).map(|b| !b),
                Model::And(a, b) => match (a.eval(code, user), b.eval(code, user)) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                },
                Model::Or(a, b) => match (a.eval(code, user), b.eval(code, user)) {
                    (Some(true), _) | (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                },
            }
        }
    }

    fn model() -> impl proptest::strategy::Strategy<Value = Model> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            (0u8..6, prop_oneof![Just(200i64), Just(404), Just(500), 0i64..600]).prop_map(|(op, n)| Model::Code(op, n)),
            (any::<bool>(), prop_oneof![Just("jason"), Just("amy")]).prop_map(|(eq, v)| Model::Header(eq, v)),
            any::<bool>().prop_map(Model::Lit),
        ];
        leaf.prop_recursive(5, 32, 2, |inner| {
            prop_oneof![
                inner.clone().prop_map(|a| Model::Not(Box::new(a))),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| Model::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner).prop_map(|(a, b)| Model::Or(Box::new(a), Box::new(b))),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn the_evaluator_agrees_with_the_reference_model(
            m in model(),
            code in proptest::prop_oneof![proptest::strategy::Just(200i64), proptest::strategy::Just(404), 0i64..600],
            user in proptest::option::of(proptest::prop_oneof![proptest::strategy::Just("jason"), proptest::strategy::Just("amy")]),
        ) {
            let expr = Expr::parse(&m.render()).unwrap();
            let mut values = HashMap::from([(Attr::Code, Value::Int(code))]);
            if let Some(u) = user {
                values.insert(Attr::RequestHeader("x-user".into()), Value::Str(u.into()));
            }
            proptest::prop_assert_eq!(expr.eval(&Attrs(values)), m.eval(code, user) == Some(true), "{}", m.render());
        }
    }
}
