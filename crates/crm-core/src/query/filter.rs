//! AIP-160 `filter` and AIP-132 `order_by` parsing, compiled to sea-query conditions.
//!
//! The pipeline is `parse` (text -> typed AST [`Expr`]) followed by `compile`
//! (AST + field whitelist -> [`sea_query::Condition`]). [`parse_filter`] does both.
//!
//! Guarantees:
//! * never panics and never recurses deeply, whatever the input string: the input
//!   is limited to [`MAX_INPUT_BYTES`] bytes, parentheses to [`MAX_DEPTH`] levels and
//!   the number of comparisons to [`MAX_TERMS`]; exceeding a limit is a [`FilterError`];
//! * every literal is bound as a query parameter, never spliced into SQL text;
//! * every error carries the 0-based *character* offset of the offending token.
//!
//! Precedence follows AIP-160: `OR` binds tighter than `AND` (explicit or implicit by
//! juxtaposition), and `NOT` / `-` binds tightest, so `a AND b OR c` is `a AND (b OR c)`.
//!
//! String semantics (the SQL differs per [`Dialect`]; `=`, `!=`, prefix and `:` find the
//! same rows on SQLite and PostgreSQL):
//! * `=` / `!=` compare the whole value exactly (case-sensitive); `<` ... `>=` compare in
//!   the column's collation order (binary on SQLite, the database's on PostgreSQL);
//! * `= "abc*"` / `!= "abc*"` (a trailing `*`) is a case-sensitive prefix match; every
//!   other character of the prefix is literal;
//! * `:` is a case-insensitive *contains* under Unicode simple case folding (any script),
//!   with the literal matched literally. It compiles to a regular expression in which every
//!   cased character is replaced by its whole folding class (`"ω"` -> `[Ωω\u{2126}]`), matched
//!   case-sensitively, so neither database's locale, `LOWER` or `LIKE` folding is involved.

use std::fmt::{self, Write as _};

use chrono::{DateTime, NaiveDate, Utc};
use regex_syntax::hir::{ClassUnicode, ClassUnicodeRange};
use sea_orm::sea_query;
use sea_query::{BinOper, Condition, Expr as SqlExpr, ExprTrait, Func, LikeExpr};

/// Maximum accepted length of a `filter` or `order_by` string, in bytes.
pub const MAX_INPUT_BYTES: usize = 8192;
/// Maximum nesting depth of parentheses in a filter.
pub const MAX_DEPTH: usize = 32;
/// Maximum number of comparisons (restrictions) in a filter.
pub const MAX_TERMS: usize = 200;

/// Escape character used in every generated `LIKE ... ESCAPE '!'` clause. A character
/// without special meaning in SQL string literals, so it behaves identically on
/// PostgreSQL (whatever `standard_conforming_strings` is) and SQLite.
const LIKE_ESCAPE: char = '!';
/// Stored form of an empty [`FieldType::StringList`].
const EMPTY_LIST: &str = "||";
/// Limit on AST depth accepted by [`compile`] (guards hand-built ASTs; a parsed AST
/// is always much shallower).
const MAX_AST_DEPTH: usize = 4 * MAX_DEPTH + 8;

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// Type of a filterable / sortable field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Int64,
    Bool,
    Timestamp,
    Date,
    /// An enum stored as its name; the slice lists the accepted names.
    Enum(&'static [&'static str]),
    /// Text column in the delimited form `|a|b|c|` (elements lower-cased); `||` is empty.
    StringList,
    /// A UUID column referencing a resource of the named collection; values are resource
    /// names such as `accounts/{id}`.
    Ref(&'static str),
    /// Ids of resources of the named collection stored as `|id|id|`; `:` tests membership
    /// with a resource name.
    RefList(&'static str),
}

impl FieldType {
    fn describe(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Int64 => "integer",
            FieldType::Bool => "boolean",
            FieldType::Timestamp => "timestamp",
            FieldType::Date => "date",
            FieldType::Enum(_) => "enum",
            FieldType::StringList => "string list",
            FieldType::Ref(_) => "reference",
            FieldType::RefList(_) => "reference list",
        }
    }

    fn allows(self, op: Op) -> bool {
        match self {
            FieldType::String => true,
            FieldType::Int64 | FieldType::Timestamp | FieldType::Date => op != Op::Has,
            FieldType::Bool | FieldType::Enum(_) => matches!(op, Op::Eq | Op::Ne),
            FieldType::StringList | FieldType::RefList(_) => op == Op::Has,
            FieldType::Ref(_) => matches!(op, Op::Eq | Op::Ne),
        }
    }
}

/// A field exposed to filtering / ordering: public `name` mapped to a DB `column`.
#[derive(Debug, Clone, Copy)]
pub struct FilterField {
    pub name: &'static str,
    pub column: &'static str,
    pub ty: FieldType,
    pub filterable: bool,
    pub sortable: bool,
}

/// A parse or type error; `position` is a 0-based character (not byte) offset.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} at position {position}")]
pub struct FilterError {
    pub position: usize,
    pub message: String,
}

fn err<T>(position: usize, message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError {
        position,
        message: message.into(),
    })
}

/// Comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
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
    /// `:` (has)
    Has,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Has => ":",
        }
    }

    fn bin_oper(self) -> Option<BinOper> {
        match self {
            Op::Eq => Some(BinOper::Equal),
            Op::Ne => Some(BinOper::NotEqual),
            Op::Lt => Some(BinOper::SmallerThan),
            Op::Le => Some(BinOper::SmallerThanOrEqual),
            Op::Gt => Some(BinOper::GreaterThan),
            Op::Ge => Some(BinOper::GreaterThanOrEqual),
            Op::Has => None,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The literal on the right-hand side of a comparison, as written.
/// Its meaning for a given field is decided by [`compile`].
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A quoted string (`"..."` or `'...'`), escapes already decoded.
    String(String),
    /// A bare word that is not an integer, `true`/`false` or `*` (e.g. `ACTIVE`, `007`).
    Text(String),
    /// A bare integer in canonical form (`42`, `-7`; `007` and `+7` stay [`Literal::Text`]).
    Int(i64),
    /// Bare `true` / `false`.
    Bool(bool),
    /// Bare `*` (only after `:`): the field is present.
    Any,
}

/// A leaf restriction `field OP value`, with the character offset of each part.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub field: String,
    pub field_position: usize,
    pub op: Op,
    pub op_position: usize,
    pub value: Literal,
    pub value_position: usize,
}

/// Filter AST. `And` / `Or` produced by [`parse`] have at least two operands.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Compare(Comparison),
}

/// One `order_by` term.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderTerm {
    pub field: &'static str,
    pub column: &'static str,
    pub ty: FieldType,
    pub descending: bool,
}

// ---------------------------------------------------------------------------
// Display (renders an AST back to filter text that parses to the same AST)
// ---------------------------------------------------------------------------

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::String(s) => {
                f.write_char('"')?;
                for c in s.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        '\n' => f.write_str("\\n")?,
                        '\t' => f.write_str("\\t")?,
                        c => f.write_char(c)?,
                    }
                }
                f.write_char('"')
            }
            Literal::Text(s) => f.write_str(s),
            Literal::Int(n) => write!(f, "{n}"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Any => f.write_char('*'),
        }
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op == Op::Has {
            write!(f, "{}:{}", self.field, self.value)
        } else {
            write!(f, "{} {} {}", self.field, self.op, self.value)
        }
    }
}

/// Writes an operand of `And` / `Or` / `Not`, adding parentheses only where the
/// grammar needs them, so the rendered text is never nested deeper than the source
/// it was parsed from (and so stays within [`MAX_DEPTH`]).
fn write_operand(f: &mut fmt::Formatter<'_>, parent: &Expr, e: &Expr) -> fmt::Result {
    let needs_parens = match (parent, e) {
        (_, Expr::Compare(_)) => false,
        // `NOT` applies to a single comparison or a parenthesised group.
        (Expr::Not(_), _) => true,
        // A `NOT` term can be an operand of AND / OR as is.
        (_, Expr::Not(_)) => false,
        // OR binds tighter than AND.
        (Expr::And(_), Expr::Or(_)) => false,
        _ => true,
    };
    if needs_parens {
        write!(f, "({e})")
    } else {
        write!(f, "{e}")
    }
}

fn write_joined(
    f: &mut fmt::Formatter<'_>,
    parent: &Expr,
    items: &[Expr],
    sep: &str,
) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write_operand(f, parent, item)?;
    }
    Ok(())
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Compare(c) => write!(f, "{c}"),
            Expr::Not(inner) => {
                f.write_str("NOT ")?;
                write_operand(f, self, inner)
            }
            Expr::And(items) => write_joined(f, self, items, " AND "),
            Expr::Or(items) => write_joined(f, self, items, " OR "),
        }
    }
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

fn check_len(input: &str) -> Result<(), FilterError> {
    if input.len() > MAX_INPUT_BYTES {
        let mut end = 0usize;
        let position = input
            .chars()
            .take_while(|c| {
                end = end.saturating_add(c.len_utf8());
                end <= MAX_INPUT_BYTES
            })
            .count();
        return err(
            position,
            format!("input is too long (max {MAX_INPUT_BYTES} bytes)"),
        );
    }
    Ok(())
}

/// Quote a user-supplied string for an error message (truncated).
fn quoted(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() > MAX {
        let short: String = s.chars().take(MAX).collect();
        format!("{short:?}...")
    } else {
        format!("{s:?}")
    }
}

fn is_value_terminator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '"' | '\'' | '=' | '<' | '>' | '!')
}

fn is_field_terminator(c: char) -> bool {
    is_value_terminator(c) || c == ':'
}

/// `ident(.ident)*` with ASCII identifiers.
fn is_valid_field_name(name: &str) -> bool {
    name.split('.').all(|seg| {
        let mut chars = seg.chars();
        match chars.next() {
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            }
            _ => false,
        }
    })
}

const GLOBAL_RESTRICTION: &str =
    "a comparison is required (expected `field OP value`; bare values are not supported)";

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
    terms: usize,
}

impl Parser {
    fn new(input: &str) -> Self {
        Parser {
            chars: input.chars().collect(),
            pos: 0,
            depth: 0,
            terms: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos.saturating_add(offset)).copied()
    }

    fn bump(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n);
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump(1);
        }
    }

    /// Whether the keyword `kw` starts here, followed by whitespace, `(` or the end.
    fn at_keyword(&self, kw: &str) -> bool {
        let mut len = 0usize;
        for (i, k) in kw.chars().enumerate() {
            if self.peek_at(i) != Some(k) {
                return false;
            }
            len = i.saturating_add(1);
        }
        match self.peek_at(len) {
            None => true,
            Some(c) => c.is_whitespace() || c == '(',
        }
    }

    fn read_while_not(&mut self, stop: fn(char) -> bool) -> String {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if stop(c) {
                break;
            }
            out.push(c);
            self.bump(1);
        }
        out
    }

    fn peek_comparator(&self) -> Option<(Op, usize)> {
        let next = self.peek_at(1);
        Some(match (self.peek()?, next) {
            ('<', Some('=')) => (Op::Le, 2),
            ('>', Some('=')) => (Op::Ge, 2),
            ('!', Some('=')) => (Op::Ne, 2),
            ('<', _) => (Op::Lt, 1),
            ('>', _) => (Op::Gt, 1),
            ('=', _) => (Op::Eq, 1),
            (':', _) => (Op::Has, 1),
            _ => return None,
        })
    }

    /// expression : sequence {AND sequence}   (flattened into one `And`)
    fn parse_expression(&mut self) -> Result<Expr, FilterError> {
        let mut items = Vec::new();
        self.parse_sequence_into(&mut items)?;
        loop {
            self.skip_ws();
            if self.at_keyword("AND") {
                self.bump(3);
                self.skip_ws();
                self.parse_sequence_into(&mut items)?;
            } else {
                break;
            }
        }
        Ok(collapse(items, Expr::And))
    }

    /// sequence : factor {WS factor}   (implicit AND)
    fn parse_sequence_into(&mut self, items: &mut Vec<Expr>) -> Result<(), FilterError> {
        items.push(self.parse_factor()?);
        loop {
            self.skip_ws();
            match self.peek() {
                None | Some(')') => return Ok(()),
                Some(_) if self.at_keyword("AND") => return Ok(()),
                Some(_) => items.push(self.parse_factor()?),
            }
        }
    }

    /// factor : term {OR term}
    fn parse_factor(&mut self) -> Result<Expr, FilterError> {
        let mut items = vec![self.parse_term()?];
        loop {
            self.skip_ws();
            if self.at_keyword("OR") {
                self.bump(2);
                self.skip_ws();
                items.push(self.parse_term()?);
            } else {
                break;
            }
        }
        Ok(collapse(items, Expr::Or))
    }

    /// term : [NOT | -] simple
    fn parse_term(&mut self) -> Result<Expr, FilterError> {
        self.skip_ws();
        if self.at_keyword("NOT") {
            self.bump(3);
            self.skip_ws();
            return Ok(Expr::Not(Box::new(self.parse_simple()?)));
        }
        if self.peek() == Some('-') {
            self.bump(1);
            return Ok(Expr::Not(Box::new(self.parse_simple()?)));
        }
        self.parse_simple()
    }

    /// simple : restriction | '(' expression ')'
    fn parse_simple(&mut self) -> Result<Expr, FilterError> {
        let start = self.pos;
        match self.peek() {
            None => err(start, "expected a comparison, found end of input"),
            Some('(') => {
                if self.depth >= MAX_DEPTH {
                    return err(
                        start,
                        format!("parentheses are nested too deeply (max {MAX_DEPTH})"),
                    );
                }
                self.depth = self.depth.saturating_add(1);
                self.bump(1);
                let inner = self.parse_expression()?;
                self.skip_ws();
                if self.peek() != Some(')') {
                    return err(start, "unbalanced parenthesis: '(' is never closed");
                }
                self.bump(1);
                self.depth = self.depth.saturating_sub(1);
                Ok(inner)
            }
            Some(')') => err(start, "expected a comparison, found ')'"),
            Some(q @ ('"' | '\'')) => {
                self.read_string(q)?;
                self.skip_ws();
                if self.peek_comparator().is_some() {
                    err(start, "expected a field name, found a string")
                } else {
                    err(start, GLOBAL_RESTRICTION)
                }
            }
            Some(_) => {
                for kw in ["AND", "OR", "NOT"] {
                    if self.at_keyword(kw) {
                        return err(start, format!("unexpected keyword {kw}"));
                    }
                }
                self.parse_restriction()
            }
        }
    }

    fn parse_restriction(&mut self) -> Result<Expr, FilterError> {
        let field_position = self.pos;
        let field = self.read_while_not(is_field_terminator);
        if field.is_empty() {
            return match self.peek() {
                Some(c) => err(
                    field_position,
                    format!("expected a field name, found {c:?}"),
                ),
                None => err(field_position, "expected a field name"),
            };
        }
        self.skip_ws();
        let Some((op, op_len)) = self.peek_comparator() else {
            if self.peek() == Some('!') {
                return err(self.pos, "expected '=' after '!'");
            }
            return err(field_position, GLOBAL_RESTRICTION);
        };
        if !is_valid_field_name(&field) {
            return err(
                field_position,
                format!("invalid field name {}", quoted(&field)),
            );
        }
        self.terms = self.terms.saturating_add(1);
        if self.terms > MAX_TERMS {
            return err(
                field_position,
                format!("too many comparisons (max {MAX_TERMS})"),
            );
        }
        let op_position = self.pos;
        self.bump(op_len);
        self.skip_ws();
        let value_position = self.pos;
        let value = self.parse_value(op)?;
        Ok(Expr::Compare(Comparison {
            field,
            field_position,
            op,
            op_position,
            value,
            value_position,
        }))
    }

    fn parse_value(&mut self, op: Op) -> Result<Literal, FilterError> {
        let start = self.pos;
        match self.peek() {
            None => err(start, format!("expected a value after '{op}'")),
            Some(q @ ('"' | '\'')) => Ok(Literal::String(self.read_string(q)?)),
            Some(c) if is_value_terminator(c) => {
                err(start, format!("expected a value after '{op}', found {c:?}"))
            }
            Some(_) => {
                let word = self.read_while_not(is_value_terminator);
                match word.as_str() {
                    "*" if op == Op::Has => Ok(Literal::Any),
                    "*" => err(start, "the wildcard '*' is only allowed with ':'"),
                    "true" => Ok(Literal::Bool(true)),
                    "false" => Ok(Literal::Bool(false)),
                    _ => match word.parse::<i64>() {
                        Ok(n) if n.to_string() == word => Ok(Literal::Int(n)),
                        _ => Ok(Literal::Text(word)),
                    },
                }
            }
        }
    }

    /// Reads a quoted string starting at the opening quote.
    fn read_string(&mut self, quote: char) -> Result<String, FilterError> {
        let start = self.pos;
        self.bump(1);
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return err(start, "unterminated string literal");
            };
            let here = self.pos;
            self.bump(1);
            if c == quote {
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some(escaped) = self.peek() else {
                return err(start, "unterminated string literal");
            };
            self.bump(1);
            match escaped {
                '"' | '\'' | '\\' => out.push(escaped),
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => {
                    return err(here, format!("invalid escape sequence \"\\{other}\""));
                }
            }
        }
    }
}

/// A single operand stands for itself; two or more are wrapped in `wrap`.
fn collapse(mut items: Vec<Expr>, wrap: fn(Vec<Expr>) -> Expr) -> Expr {
    if items.len() == 1
        && let Some(only) = items.pop()
    {
        return only;
    }
    wrap(items)
}

/// Parses an AIP-160 filter. Empty / whitespace-only input yields `Ok(None)`.
pub fn parse(input: &str) -> Result<Option<Expr>, FilterError> {
    check_len(input)?;
    if input.trim().is_empty() {
        return Ok(None);
    }
    let mut parser = Parser::new(input);
    let expr = parser.parse_expression()?;
    parser.skip_ws();
    match parser.peek() {
        None => Ok(Some(expr)),
        Some(')') => err(parser.pos, "unbalanced parenthesis: unexpected ')'"),
        Some(c) => err(parser.pos, format!("unexpected {c:?}")),
    }
}

// ---------------------------------------------------------------------------
// Compiler
// ---------------------------------------------------------------------------

/// Escapes `%`, `_` and the escape character for use in `LIKE ... ESCAPE '!'`.
fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | LIKE_ESCAPE) {
            out.push(LIKE_ESCAPE);
        }
        out.push(c);
    }
    out
}

/// Escapes the GLOB metacharacters `*`, `?` and `[` as one-character classes.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '*' => out.push_str("[*]"),
            '?' => out.push_str("[?]"),
            '[' => out.push_str("[[]"),
            c => out.push(c),
        }
    }
    out
}

/// A regular expression that finds `text` anywhere, case-insensitively by Unicode simple
/// case folding: each character with case variants becomes a bracket list of its whole
/// folding class (`k` -> `[Kk\u{212A}]`, `ς` -> `[Σςσ]`), every other character is itself, with
/// a backslash before regex metacharacters. The pattern is matched *case-sensitively* and
/// uses only literals, backslash-escaped ASCII punctuation and bracket lists of letters, which
/// mean the same in the regex crate (SQLite's REGEXP, see `Db::connect`) and in PostgreSQL's
/// `~`, whatever the database locale.
fn fold_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len().saturating_mul(2));
    let mut class_members = Vec::new();
    for c in text.chars() {
        let mut class = ClassUnicode::new([ClassUnicodeRange::new(c, c)]);
        class_members.clear();
        // Cannot fail (the `unicode-case` feature is enabled); on failure `c` stands alone.
        if class.try_case_fold_simple().is_ok() {
            class_members.extend(class.iter().flat_map(|r| r.start()..=r.end()));
        }
        if class_members.len() > 1 {
            out.push('[');
            out.extend(class_members.iter());
            out.push(']');
        } else {
            if regex_syntax::is_meta_character(c) {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out
}

fn leftmost_position(expr: &Expr) -> usize {
    let mut e = expr;
    loop {
        match e {
            Expr::And(items) | Expr::Or(items) => match items.first() {
                Some(first) => e = first,
                None => return 0,
            },
            Expr::Not(inner) => e = inner,
            Expr::Compare(c) => return c.field_position,
        }
    }
}

/// Compiles a parsed filter against a field whitelist.
pub fn compile(expr: &Expr, fields: &[FilterField]) -> Result<Condition, FilterError> {
    compile_at(expr, fields, 0, Dialect::Portable)
}

/// SQL dialect. Both give the same results; the SQL differs where the databases do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// SQLite (the default): `:` on text as `col REGEXP pattern` (the function `Db::connect`
    /// registers), prefix match as `col GLOB 'abc*'`, list membership as `LIKE '%|v|%'`.
    #[default]
    Portable,
    /// PostgreSQL: `:` on text as `col ~ pattern`, prefix match as `col LIKE 'abc%'`, list
    /// membership as `string_to_array(col, '|') @> ARRAY[v]`, which the GIN expression
    /// indexes of the schema serve.
    Postgres,
}

/// Compiles a parsed filter for a dialect.
pub fn compile_for(
    expr: &Expr,
    fields: &[FilterField],
    dialect: Dialect,
) -> Result<Condition, FilterError> {
    compile_at(expr, fields, 0, dialect)
}

fn compile_at(
    expr: &Expr,
    fields: &[FilterField],
    depth: usize,
    dialect: Dialect,
) -> Result<Condition, FilterError> {
    if depth > MAX_AST_DEPTH {
        return err(leftmost_position(expr), "filter is nested too deeply");
    }
    let next = depth.saturating_add(1);
    match expr {
        Expr::And(items) | Expr::Or(items) => {
            if items.is_empty() {
                return err(leftmost_position(expr), "empty AND/OR expression");
            }
            let mut cond = if matches!(expr, Expr::And(_)) {
                Condition::all()
            } else {
                Condition::any()
            };
            for item in items {
                cond = cond.add(compile_at(item, fields, next, dialect)?);
            }
            Ok(cond)
        }
        Expr::Not(inner) => Ok(compile_at(inner, fields, next, dialect)?.not()),
        Expr::Compare(c) => compile_comparison(c, fields, dialect),
    }
}

fn literal_text(c: &Comparison) -> Result<String, FilterError> {
    match &c.value {
        Literal::String(s) | Literal::Text(s) => Ok(s.clone()),
        Literal::Int(n) => Ok(n.to_string()),
        Literal::Bool(b) => Ok(b.to_string()),
        Literal::Any => err(
            c.value_position,
            "the wildcard '*' is only allowed with ':'",
        ),
    }
}

fn compare(
    c: &Comparison,
    col: SqlExpr,
    value: impl Into<SqlExpr>,
) -> Result<SqlExpr, FilterError> {
    match c.op.bin_oper() {
        Some(op) => Ok(col.binary(op, value)),
        None => err(
            c.op_position,
            format!("operator '{}' is not supported here", c.op),
        ),
    }
}

fn expect_int(c: &Comparison, field: &FilterField) -> Result<i64, FilterError> {
    match &c.value {
        Literal::Int(n) => Ok(*n),
        Literal::Text(s) => match s.parse::<i64>() {
            Ok(n) => Ok(n),
            Err(_) => {
                let digits = s.trim_start_matches(['-', '+']);
                if !digits.is_empty() && digits.chars().all(|ch| ch.is_ascii_digit()) {
                    err(
                        c.value_position,
                        format!("integer {} is out of range", quoted(s)),
                    )
                } else {
                    err(
                        c.value_position,
                        format!(
                            "expected an integer for field {}, found {}",
                            quoted(field.name),
                            quoted(s)
                        ),
                    )
                }
            }
        },
        other => err(
            c.value_position,
            format!(
                "expected an integer for field {}, found {other}",
                quoted(field.name)
            ),
        ),
    }
}

fn expect_bool(c: &Comparison, field: &FilterField) -> Result<bool, FilterError> {
    match &c.value {
        Literal::Bool(b) => Ok(*b),
        other => err(
            c.value_position,
            format!(
                "expected true or false for field {}, found {other}",
                quoted(field.name)
            ),
        ),
    }
}

fn expect_timestamp(c: &Comparison, field: &FilterField) -> Result<DateTime<Utc>, FilterError> {
    let text = literal_text(c)?;
    match DateTime::parse_from_rfc3339(&text) {
        Ok(ts) => Ok(ts.with_timezone(&Utc)),
        Err(_) => err(
            c.value_position,
            format!(
                "invalid timestamp {} for field {}: expected RFC 3339, e.g. \"2024-01-02T03:04:05Z\"",
                quoted(&text),
                quoted(field.name)
            ),
        ),
    }
}

fn expect_date(c: &Comparison, field: &FilterField) -> Result<NaiveDate, FilterError> {
    let text = literal_text(c)?;
    let shape_ok = text.chars().count() == 10
        && text.chars().enumerate().all(|(i, ch)| {
            if i == 4 || i == 7 {
                ch == '-'
            } else {
                ch.is_ascii_digit()
            }
        });
    match NaiveDate::parse_from_str(&text, "%Y-%m-%d") {
        Ok(d) if shape_ok => Ok(d),
        _ => err(
            c.value_position,
            format!(
                "invalid date {} for field {}: expected YYYY-MM-DD",
                quoted(&text),
                quoted(field.name)
            ),
        ),
    }
}

fn expect_ref(
    c: &Comparison,
    field: &FilterField,
    collection: &str,
) -> Result<uuid::Uuid, FilterError> {
    let text = literal_text(c)?;
    text.strip_prefix(collection)
        .and_then(|r| r.strip_prefix('/'))
        .and_then(|id| uuid::Uuid::try_parse(id).ok())
        .ok_or_else(|| FilterError {
            position: c.value_position,
            message: format!(
                "field {} takes a resource name like \"{collection}/{{id}}\", found {}",
                quoted(field.name),
                quoted(&text)
            ),
        })
}

fn compile_comparison(
    c: &Comparison,
    fields: &[FilterField],
    dialect: Dialect,
) -> Result<Condition, FilterError> {
    let Some(field) = fields.iter().find(|f| f.name == c.field) else {
        return err(
            c.field_position,
            format!("unknown field {}", quoted(&c.field)),
        );
    };
    if !field.filterable {
        return err(
            c.field_position,
            format!("field {} is not filterable", quoted(field.name)),
        );
    }
    let col = SqlExpr::col(field.column);

    if c.value == Literal::Any {
        if c.op != Op::Has {
            return err(
                c.value_position,
                "the wildcard '*' is only allowed with ':'",
            );
        }
        let cond = match field.ty {
            FieldType::StringList | FieldType::RefList(_) => Condition::all()
                .add(col.clone().ne(EMPTY_LIST))
                .add(col.is_not_null()),
            _ => Condition::all().add(col.is_not_null()),
        };
        return Ok(cond);
    }

    if !field.ty.allows(c.op) {
        return err(
            c.op_position,
            format!(
                "operator '{}' is not supported for {} field {}",
                c.op,
                field.ty.describe(),
                quoted(field.name)
            ),
        );
    }

    let expr = match field.ty {
        FieldType::String => {
            let text = literal_text(c)?;
            // Not LIKE / LOWER: SQLite folds ASCII only and its LIKE ignores ASCII case,
            // PostgreSQL folds by locale and its LIKE is case-sensitive.
            let prefix_like = |prefix: &str| {
                LikeExpr::new(format!("{}%", escape_like(prefix))).escape(LIKE_ESCAPE)
            };
            let glob = |prefix: &str| SqlExpr::val(format!("{}*", escape_glob(prefix)));
            match (c.op, text.strip_suffix('*'), dialect) {
                (Op::Has, _, Dialect::Portable) => {
                    col.binary(BinOper::Custom("REGEXP"), fold_pattern(&text))
                }
                (Op::Has, _, Dialect::Postgres) => {
                    col.binary(BinOper::Custom("~"), fold_pattern(&text))
                }
                // GLOB is case-sensitive (LIKE on SQLite is not).
                (Op::Eq, Some(prefix), Dialect::Portable) => {
                    col.binary(BinOper::Custom("GLOB"), glob(prefix))
                }
                (Op::Ne, Some(prefix), Dialect::Portable) => {
                    col.binary(BinOper::Custom("NOT GLOB"), glob(prefix))
                }
                (Op::Eq, Some(prefix), Dialect::Postgres) => col.like(prefix_like(prefix)),
                (Op::Ne, Some(prefix), Dialect::Postgres) => col.not_like(prefix_like(prefix)),
                _ => compare(c, col, text)?,
            }
        }
        FieldType::Int64 => compare(c, col, expect_int(c, field)?)?,
        FieldType::Bool => compare(c, col, expect_bool(c, field)?)?,
        FieldType::Timestamp => compare(c, col, expect_timestamp(c, field)?)?,
        FieldType::Date => compare(c, col, expect_date(c, field)?)?,
        FieldType::Enum(allowed) => {
            let text = literal_text(c)?;
            if !allowed.contains(&text.as_str()) {
                return err(
                    c.value_position,
                    format!(
                        "invalid value {} for field {}; allowed values: {}",
                        quoted(&text),
                        quoted(field.name),
                        allowed.join(", ")
                    ),
                );
            }
            compare(c, col, text)?
        }
        FieldType::Ref(collection) => {
            let id = expect_ref(c, field, collection)?;
            compare(c, col, id)?
        }
        FieldType::RefList(collection) => {
            let id = expect_ref(c, field, collection)?;
            col.like(LikeExpr::new(format!("%|{id}|%")).escape(LIKE_ESCAPE))
        }
        FieldType::StringList => {
            let text = literal_text(c)?;
            if text.contains('|') {
                return err(c.value_position, "list values must not contain '|'");
            }
            if text.is_empty() {
                return err(c.value_position, "list value must not be empty");
            }
            match dialect {
                Dialect::Portable => {
                    let pattern = format!("%|{}|%", escape_like(&text.to_lowercase()));
                    col.like(LikeExpr::new(pattern).escape(LIKE_ESCAPE))
                }
                Dialect::Postgres => {
                    // string_to_array(col, '|') @> string_to_array($n, '|'): the left side is
                    // exactly the GIN index expression, so the index serves it.
                    let array = |e: SqlExpr| {
                        SqlExpr::from(
                            Func::cust("string_to_array")
                                .arg(e)
                                .arg(SqlExpr::cust("'|'")),
                        )
                    };
                    array(col).binary(
                        BinOper::Custom("@>"),
                        array(SqlExpr::val(text.to_lowercase())),
                    )
                }
            }
        }
    };
    Ok(Condition::all().add(expr))
}

/// Parses and compiles a filter. Empty / whitespace-only input yields `Ok(None)`.
pub fn parse_filter(input: &str, fields: &[FilterField]) -> Result<Option<Condition>, FilterError> {
    parse_filter_for(input, fields, Dialect::Portable)
}

/// Parses and compiles a filter for a dialect.
pub fn parse_filter_for(
    input: &str,
    fields: &[FilterField],
    dialect: Dialect,
) -> Result<Option<Condition>, FilterError> {
    match parse(input)? {
        Some(expr) => compile_for(&expr, fields, dialect).map(Some),
        None => Ok(None),
    }
}

// ---------------------------------------------------------------------------
// order_by (AIP-132)
// ---------------------------------------------------------------------------

/// Parses `field [asc|desc] {, field [asc|desc]}`. Empty input yields an empty vec.
pub fn parse_order_by(input: &str, fields: &[FilterField]) -> Result<Vec<OrderTerm>, FilterError> {
    check_len(input)?;
    if input.trim().is_empty() {
        return Ok(Vec::new());
    }
    let chars: Vec<char> = input.chars().collect();
    let mut pos = 0usize;
    let mut out: Vec<OrderTerm> = Vec::new();
    loop {
        // Collect the whitespace-separated words of one comma-separated item.
        let mut words: Vec<(usize, String)> = Vec::new();
        while let Some(&c) = chars.get(pos) {
            if c == ',' {
                break;
            }
            if c.is_whitespace() {
                pos = pos.saturating_add(1);
                continue;
            }
            let start = pos;
            let mut word = String::new();
            while let Some(&c) = chars.get(pos) {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                word.push(c);
                pos = pos.saturating_add(1);
            }
            words.push((start, word));
        }
        let mut words = words.into_iter();
        let Some((field_pos, name)) = words.next() else {
            return err(pos, "expected a field name in order_by");
        };
        let descending = match words.next() {
            None => false,
            Some((_, dir)) if dir.eq_ignore_ascii_case("asc") => false,
            Some((_, dir)) if dir.eq_ignore_ascii_case("desc") => true,
            Some((p, dir)) => {
                return err(
                    p,
                    format!("expected \"asc\" or \"desc\", found {}", quoted(&dir)),
                );
            }
        };
        if let Some((p, extra)) = words.next() {
            return err(
                p,
                format!("unexpected {} in order_by, expected ','", quoted(&extra)),
            );
        }
        let Some(field) = fields.iter().find(|f| f.name == name) else {
            return err(field_pos, format!("unknown field {}", quoted(&name)));
        };
        if !field.sortable {
            return err(
                field_pos,
                format!("field {} is not sortable", quoted(field.name)),
            );
        }
        if out.iter().any(|t| t.field == field.name) {
            return err(
                field_pos,
                format!("duplicate order_by field {}", quoted(field.name)),
            );
        }
        out.push(OrderTerm {
            field: field.name,
            column: field.column,
            ty: field.ty,
            descending,
        });
        if chars.get(pos) == Some(&',') {
            pos = pos.saturating_add(1);
        } else {
            return Ok(out);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sea_query::{PostgresQueryBuilder, Query, SqliteQueryBuilder};

    const STATES: &[&str] = &["ACTIVE", "INACTIVE", "DELETED"];

    const FIELDS: &[FilterField] = &[
        FilterField {
            name: "display_name",
            column: "display_name",
            ty: FieldType::String,
            filterable: true,
            sortable: true,
        },
        FilterField {
            name: "age",
            column: "age",
            ty: FieldType::Int64,
            filterable: true,
            sortable: true,
        },
        FilterField {
            name: "active",
            column: "is_active",
            ty: FieldType::Bool,
            filterable: true,
            sortable: false,
        },
        FilterField {
            name: "create_time",
            column: "created_at",
            ty: FieldType::Timestamp,
            filterable: true,
            sortable: true,
        },
        FilterField {
            name: "birthday",
            column: "birth_date",
            ty: FieldType::Date,
            filterable: true,
            sortable: true,
        },
        FilterField {
            name: "state",
            column: "state",
            ty: FieldType::Enum(STATES),
            filterable: true,
            sortable: true,
        },
        FilterField {
            name: "tags",
            column: "tags",
            ty: FieldType::StringList,
            filterable: true,
            sortable: false,
        },
        FilterField {
            name: "address.city",
            column: "address_city",
            ty: FieldType::String,
            filterable: true,
            sortable: true,
        },
        FilterField {
            name: "secret",
            column: "secret",
            ty: FieldType::String,
            filterable: false,
            sortable: false,
        },
    ];

    // ----- helpers -------------------------------------------------------

    /// Zeroes all positions so ASTs can be compared structurally.
    fn strip(e: &Expr) -> Expr {
        match e {
            Expr::And(v) => Expr::And(v.iter().map(strip).collect()),
            Expr::Or(v) => Expr::Or(v.iter().map(strip).collect()),
            Expr::Not(b) => Expr::Not(Box::new(strip(b))),
            Expr::Compare(c) => Expr::Compare(Comparison {
                field_position: 0,
                op_position: 0,
                value_position: 0,
                ..c.clone()
            }),
        }
    }

    fn cmp(field: &str, op: Op, value: Literal) -> Expr {
        Expr::Compare(Comparison {
            field: field.to_string(),
            field_position: 0,
            op,
            op_position: 0,
            value,
            value_position: 0,
        })
    }

    fn int(field: &str, n: i64) -> Expr {
        cmp(field, Op::Eq, Literal::Int(n))
    }

    fn ast(input: &str) -> Expr {
        strip(&parse(input).unwrap().unwrap())
    }

    fn parse_err(input: &str) -> FilterError {
        parse(input).unwrap_err()
    }

    fn filter_err(input: &str) -> FilterError {
        parse_filter(input, FIELDS).unwrap_err()
    }

    fn pg(input: &str) -> String {
        let cond = parse_filter_for(input, FIELDS, Dialect::Postgres)
            .unwrap()
            .unwrap();
        Query::select()
            .column("id")
            .from("contacts")
            .cond_where(cond)
            .to_string(PostgresQueryBuilder)
    }

    fn sqlite(input: &str) -> String {
        let cond = parse_filter(input, FIELDS).unwrap().unwrap();
        Query::select()
            .column("id")
            .from("contacts")
            .cond_where(cond)
            .to_string(SqliteQueryBuilder)
    }

    /// The WHERE clause only, rendered for PostgreSQL.
    fn pg_where(input: &str) -> String {
        let sql = pg(input);
        sql.split_once(" WHERE ").unwrap().1.to_string()
    }

    fn sqlite_where(input: &str) -> String {
        let sql = sqlite(input);
        sql.split_once(" WHERE ").unwrap().1.to_string()
    }

    // ----- parsing: basics ------------------------------------------------

    #[test]
    fn empty_input_is_none() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("   \t\n ").unwrap(), None);
        assert!(parse_filter(" ", FIELDS).unwrap().is_none());
    }

    #[test]
    fn every_operator_parses() {
        for (text, op) in [
            ("=", Op::Eq),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            ("<=", Op::Le),
            (">", Op::Gt),
            (">=", Op::Ge),
            (":", Op::Has),
        ] {
            assert_eq!(
                ast(&format!("age {text} 5")),
                cmp("age", op, Literal::Int(5))
            );
            assert_eq!(ast(&format!("age{text}5")), cmp("age", op, Literal::Int(5)));
        }
    }

    #[test]
    fn positions_are_recorded() {
        let e = parse("  age  >=  -12").unwrap().unwrap();
        let Expr::Compare(c) = e else {
            panic!("expected a comparison")
        };
        assert_eq!(
            (c.field_position, c.op_position, c.value_position),
            (2, 7, 11)
        );
        assert_eq!(c.value, Literal::Int(-12));
    }

    #[test]
    fn literals() {
        assert_eq!(
            ast("a = ACTIVE"),
            cmp("a", Op::Eq, Literal::Text("ACTIVE".into()))
        );
        assert_eq!(
            ast("a = Tokyo"),
            cmp("a", Op::Eq, Literal::Text("Tokyo".into()))
        );
        assert_eq!(ast("a = -42"), int("a", -42));
        assert_eq!(
            ast("a = 007"),
            cmp("a", Op::Eq, Literal::Text("007".into()))
        );
        assert_eq!(ast("a = true"), cmp("a", Op::Eq, Literal::Bool(true)));
        assert_eq!(ast("a = false"), cmp("a", Op::Eq, Literal::Bool(false)));
        assert_eq!(
            ast("a = \"true\""),
            cmp("a", Op::Eq, Literal::String("true".into()))
        );
        assert_eq!(ast("a:*"), cmp("a", Op::Has, Literal::Any));
        assert_eq!(
            ast("a : \"*\""),
            cmp("a", Op::Has, Literal::String("*".into()))
        );
        assert_eq!(
            ast(r#"a = "q\"s\'b\\n\nt\t""#),
            cmp("a", Op::Eq, Literal::String("q\"s'b\\n\nt\t".into()))
        );
        assert_eq!(
            ast(r#"a = 'it\'s "ok"'"#),
            cmp("a", Op::Eq, Literal::String("it's \"ok\"".into()))
        );
        assert_eq!(
            ast("create_time > 2024-01-02T03:04:05+09:00"),
            cmp(
                "create_time",
                Op::Gt,
                Literal::Text("2024-01-02T03:04:05+09:00".into())
            )
        );
        assert_eq!(
            ast("address.city = 東京"),
            cmp("address.city", Op::Eq, Literal::Text("東京".into()))
        );
        assert_eq!(
            ast("a = 99999999999999999999"),
            cmp("a", Op::Eq, Literal::Text("99999999999999999999".into()))
        );
    }

    // ----- parsing: precedence -------------------------------------------

    #[test]
    fn or_binds_tighter_than_and() {
        assert_eq!(
            ast("a = 1 AND b = 2 OR c = 3"),
            Expr::And(vec![int("a", 1), Expr::Or(vec![int("b", 2), int("c", 3)])])
        );
        assert_eq!(
            ast("a = 1 OR b = 2 AND c = 3"),
            Expr::And(vec![Expr::Or(vec![int("a", 1), int("b", 2)]), int("c", 3)])
        );
        assert_eq!(
            ast("a = 1 OR b = 2 OR c = 3"),
            Expr::Or(vec![int("a", 1), int("b", 2), int("c", 3)])
        );
    }

    #[test]
    fn implicit_and_by_juxtaposition() {
        assert_eq!(
            ast("a = 1 b = 2"),
            Expr::And(vec![int("a", 1), int("b", 2)])
        );
        assert_eq!(
            ast("a = 1 b = 2 OR c = 3"),
            Expr::And(vec![int("a", 1), Expr::Or(vec![int("b", 2), int("c", 3)])])
        );
        assert_eq!(
            ast("a = 1 b = 2 AND c = 3"),
            Expr::And(vec![int("a", 1), int("b", 2), int("c", 3)])
        );
    }

    #[test]
    fn not_binds_tightest() {
        assert_eq!(
            ast("NOT a = 1 OR b = 2"),
            Expr::Or(vec![Expr::Not(Box::new(int("a", 1))), int("b", 2)])
        );
        assert_eq!(
            ast("-a = 1 AND b = 2"),
            Expr::And(vec![Expr::Not(Box::new(int("a", 1))), int("b", 2)])
        );
        assert_eq!(
            ast("NOT (a = 1 AND b = 2)"),
            Expr::Not(Box::new(Expr::And(vec![int("a", 1), int("b", 2)])))
        );
        assert_eq!(ast("NOT(a = 1)"), Expr::Not(Box::new(int("a", 1))));
        assert_eq!(ast("-(a = 1)"), Expr::Not(Box::new(int("a", 1))));
        // `NOT` as a prefix of an identifier is a field name.
        assert_eq!(ast("NOTE = 1"), int("NOTE", 1));
    }

    #[test]
    fn parentheses_group() {
        assert_eq!(
            ast("(a = 1 AND b = 2) OR c = 3"),
            Expr::Or(vec![Expr::And(vec![int("a", 1), int("b", 2)]), int("c", 3)])
        );
        assert_eq!(ast("((a = 1))"), int("a", 1));
        assert_eq!(
            ast("(a = 1 b = 2) c = 3"),
            Expr::And(vec![Expr::And(vec![int("a", 1), int("b", 2)]), int("c", 3)])
        );
    }

    #[test]
    fn display_renders_canonical_filter_text() {
        for (input, rendered) in [
            ("a=1 AND b=2 OR c=3", "a = 1 AND b = 2 OR c = 3"),
            ("(a=1 OR b=2) AND c:*", "a = 1 OR b = 2 AND c:*"),
            ("(a=1 AND b=2) OR -c:x", "(a = 1 AND b = 2) OR NOT c:x"),
            ("NOT (a=1 OR b=2)", "NOT (a = 1 OR b = 2)"),
            ("-(-a=1)", "NOT (NOT a = 1)"),
            ("a = 1 (b = 2 c = 3)", "a = 1 AND (b = 2 AND c = 3)"),
            (r#"a = 'x"y\\z'"#, r#"a = "x\"y\\z""#),
            ("a = \"l1\\nl2\"", "a = \"l1\\nl2\""),
            ("a >= 007 b != true", "a >= 007 AND b != true"),
        ] {
            let expr = parse(input).unwrap().unwrap();
            assert_eq!(expr.to_string(), rendered, "{input}");
            assert_eq!(ast(rendered), strip(&expr), "{input}");
        }
    }

    // ----- parsing: errors and positions --------------------------------

    #[test]
    fn unterminated_string() {
        let e = parse_err("a = \"abc");
        assert_eq!(e.position, 4);
        assert!(e.message.contains("unterminated"), "{e}");
        assert_eq!(parse_err("a = 'abc\\'").position, 4);
        assert_eq!(parse_err("a = \"abc\\").position, 4);
    }

    #[test]
    fn invalid_escape() {
        let e = parse_err(r#"a = "ab\qc""#);
        assert_eq!(e.position, 7);
        assert!(e.message.contains("escape"), "{e}");
    }

    #[test]
    fn unbalanced_parentheses() {
        let e = parse_err("a = 1 AND (b = 2");
        assert_eq!(e.position, 10);
        assert!(e.message.contains("parenthesis"), "{e}");
        let e = parse_err("a = 1)");
        assert_eq!(e.position, 5);
        assert!(e.message.contains("parenthesis"), "{e}");
        assert_eq!(parse_err("()").position, 1);
    }

    #[test]
    fn trailing_garbage() {
        assert_eq!(parse_err("a = 1 ===").position, 6);
        assert_eq!(parse_err("a = 1 AND").position, 9);
        assert_eq!(parse_err("a = 1 OR").position, 8);
        assert_eq!(parse_err("a =").position, 3);
        assert_eq!(parse_err("a == 1").position, 3);
        assert_eq!(parse_err("a ! 1").position, 2);
    }

    #[test]
    fn global_restriction_is_rejected() {
        for (input, pos) in [
            ("foo", 0),
            ("\"foo\"", 0),
            ("42", 0),
            ("a = 1 \"x\"", 6),
            ("a = 1 bar", 6),
        ] {
            let e = parse_err(input);
            assert_eq!(e.position, pos, "{input}");
            assert!(e.message.contains("comparison is required"), "{e}");
        }
        assert!(parse_err("\"foo\" = 1").message.contains("field name"));
        assert!(parse_err("1x = 1").message.contains("invalid field name"));
    }

    #[test]
    fn keywords_out_of_place() {
        assert!(parse_err("AND a = 1").message.contains("keyword"));
        assert!(parse_err("NOT NOT a = 1").message.contains("keyword"));
        assert_eq!(parse_err("NOT NOT a = 1").position, 4);
        assert_eq!(parse_err("a = 1 OR OR b = 1").position, 9);
    }

    #[test]
    fn wildcard_only_with_has() {
        let e = parse_err("a = *");
        assert_eq!(e.position, 4);
        assert!(e.message.contains("'*'"), "{e}");
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        // 東京 are 3 bytes each in UTF-8.
        let e = parse_err("display_name = \"東京\" )");
        assert_eq!(e.position, 20);
        let e = filter_err("display_name = \"東京\" AND foo = 1");
        assert_eq!(e.position, 24);
        assert_eq!(e.message, "unknown field \"foo\"");
        assert_eq!(e.to_string(), "unknown field \"foo\" at position 24");
    }

    #[test]
    fn limits() {
        // length
        let long = format!("a = \"{}\"", "x".repeat(MAX_INPUT_BYTES));
        assert!(parse_err(&long).message.contains("too long"));
        let long = "東".repeat(MAX_INPUT_BYTES / 3 + 1);
        assert_eq!(parse_err(&long).position, MAX_INPUT_BYTES / 3);
        // depth
        let ok = format!("{}a = 1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(ast(&ok), int("a", 1));
        let deep = format!(
            "{}a = 1{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        let e = parse_err(&deep);
        assert_eq!(e.position, MAX_DEPTH);
        assert!(e.message.contains("nested"), "{e}");
        assert!(parse_err(&"(".repeat(8000)).message.contains("nested"));
        assert!(parse_err(&"(".repeat(10_000)).message.contains("too long"));
        assert!(parse_err(&"-(".repeat(4000)).message.contains("nested"));
        assert!(parse_err(&"NOT (".repeat(1000)).message.contains("nested"));
        // terms
        let many = vec!["a = 1"; MAX_TERMS].join(" ");
        assert!(parse(&many).is_ok());
        let too_many = vec!["a = 1"; MAX_TERMS + 1].join(" ");
        let e = parse_err(&too_many);
        assert_eq!(e.position, MAX_TERMS * 6);
        assert!(e.message.contains("too many"), "{e}");
    }

    // ----- compile: types, operators, SQL shape ---------------------------

    #[test]
    fn field_errors() {
        let e = filter_err("age = 1 AND foo = 2");
        assert_eq!(
            (e.position, e.message.as_str()),
            (12, "unknown field \"foo\"")
        );
        let e = filter_err("secret = \"x\"");
        assert_eq!(e.position, 0);
        assert!(e.message.contains("not filterable"), "{e}");
    }

    #[test]
    fn string_operators() {
        assert_eq!(
            pg_where("display_name = \"Ann\""),
            r#""display_name" = 'Ann'"#
        );
        assert_eq!(
            pg_where("display_name != Ann"),
            r#""display_name" <> 'Ann'"#
        );
        assert_eq!(pg_where("display_name < \"b\""), r#""display_name" < 'b'"#);
        assert_eq!(
            pg_where("display_name <= \"b\""),
            r#""display_name" <= 'b'"#
        );
        assert_eq!(pg_where("display_name > \"b\""), r#""display_name" > 'b'"#);
        assert_eq!(
            pg_where("display_name >= \"b\""),
            r#""display_name" >= 'b'"#
        );
        // numbers / booleans are accepted for string fields verbatim
        assert_eq!(pg_where("display_name = 42"), r#""display_name" = '42'"#);
        assert_eq!(pg_where("display_name = 007"), r#""display_name" = '007'"#);
        assert_eq!(
            pg_where("address.city = Tokyo"),
            r#""address_city" = 'Tokyo'"#
        );
    }

    #[test]
    fn string_prefix_match() {
        // PostgreSQL: LIKE is case-sensitive; '%', '_' and '!' are escaped.
        assert_eq!(
            pg_where("display_name = \"a%b_c!*\""),
            r#""display_name" LIKE 'a!%b!_c!!%' ESCAPE '!'"#
        );
        assert_eq!(
            pg_where("display_name != \"abc*\""),
            r#""display_name" NOT LIKE 'abc%' ESCAPE '!'"#
        );
        // SQLite: GLOB is case-sensitive (LIKE is not); '*', '?' and '[' are escaped.
        assert_eq!(
            sqlite_where("display_name = abc*"),
            r#""display_name" GLOB 'abc*'"#
        );
        assert_eq!(
            sqlite_where("display_name = \"a%b_c![x]*?*\""),
            r#""display_name" GLOB 'a%b_c![[]x][*][?]*'"#
        );
        assert_eq!(
            sqlite_where("display_name != \"VIP*\""),
            r#""display_name" NOT GLOB 'VIP*'"#
        );
        // only a trailing '*' is a wildcard
        assert_eq!(
            pg_where("display_name = \"a*c\""),
            r#""display_name" = 'a*c'"#
        );
        assert_eq!(
            sqlite_where("display_name = \"a*c\""),
            r#""display_name" = 'a*c'"#
        );
    }

    #[test]
    fn string_has_is_case_insensitive_contains() {
        assert_eq!(
            pg_where("display_name:\"50%_Off\""),
            r#""display_name" ~ '50%_[Oo][Ff][Ff]'"#
        );
        assert_eq!(
            sqlite_where("display_name:\"50%_Off\""),
            r#""display_name" REGEXP '50%_[Oo][Ff][Ff]'"#
        );
        assert_eq!(
            sqlite_where("display_name:\"a.b*c\""),
            r#""display_name" REGEXP '[Aa]\.[Bb]\*[Cc]'"#
        );
        assert_eq!(pg_where("display_name:*"), r#""display_name" IS NOT NULL"#);
        assert_eq!(
            sqlite_where("display_name:*"),
            r#""display_name" IS NOT NULL"#
        );
    }

    #[test]
    fn fold_pattern_classes() {
        assert_eq!(fold_pattern(""), "");
        // classes in code point order; U+212A KELVIN SIGN, U+2126 OHM SIGN
        assert_eq!(fold_pattern("k"), "[Kk\u{212A}]");
        assert_eq!(fold_pattern("\u{212A}"), "[Kk\u{212A}]");
        assert_eq!(fold_pattern("ω"), "[Ωω\u{2126}]");
        assert_eq!(fold_pattern("ς"), "[Σςσ]");
        assert_eq!(fold_pattern("äB"), "[Ää][Bb]");
        assert_eq!(fold_pattern("ß"), "[ßẞ]");
        assert_eq!(fold_pattern("ｏ"), "[Ｏｏ]");
        assert_eq!(fold_pattern("И"), "[Ии]");
        // no case: the character itself
        assert_eq!(fold_pattern("山田 1"), "山田 1");
        assert_eq!(fold_pattern("%_!'\"/"), "%_!'\"/");
        assert_eq!(
            fold_pattern(r"\.+*?()|[]{}^$#&-~"),
            r"\\\.\+\*\?\(\)\|\[\]\{\}\^\$\#\&\-\~"
        );
    }

    #[test]
    fn fold_classes_hold_only_characters_literal_in_brackets() {
        // A bracket list must mean the same to both regex engines: only letters-like
        // characters, none of `[ ] \ ^ - & ~ :` or other ASCII punctuation.
        for c in (0..=0x10_FFFF_u32).filter_map(char::from_u32) {
            let pattern = fold_pattern(&c.to_string());
            if let Some(inner) = pattern.strip_prefix('[') {
                let inner = inner.strip_suffix(']').unwrap();
                assert!(inner.chars().count() > 1, "{c:?}");
                assert!(inner.contains(c), "{c:?}");
                assert!(
                    inner
                        .chars()
                        .all(|m| !m.is_ascii_punctuation() && !m.is_whitespace()),
                    "{c:?}: {pattern}"
                );
            }
        }
    }

    #[test]
    fn int_operators() {
        assert_eq!(pg_where("age = 30"), r#""age" = 30"#);
        assert_eq!(pg_where("age != -1"), r#""age" <> -1"#);
        assert_eq!(pg_where("age < 30"), r#""age" < 30"#);
        assert_eq!(pg_where("age <= 30"), r#""age" <= 30"#);
        assert_eq!(pg_where("age > 30"), r#""age" > 30"#);
        assert_eq!(pg_where("age >= 007"), r#""age" >= 7"#);
        assert_eq!(pg_where("age:*"), r#""age" IS NOT NULL"#);
        let e = filter_err("age : 3");
        assert_eq!(e.position, 4);
        assert!(e.message.contains("not supported"), "{e}");
        let e = filter_err("age = \"3\"");
        assert_eq!(e.position, 6);
        assert!(e.message.contains("integer"), "{e}");
        let e = filter_err("age = abc");
        assert_eq!(e.position, 6);
        let e = filter_err("age = 99999999999999999999");
        assert!(e.message.contains("out of range"), "{e}");
    }

    #[test]
    fn bool_operators() {
        assert_eq!(pg_where("active = true"), r#""is_active" = TRUE"#);
        assert_eq!(pg_where("active != false"), r#""is_active" <> FALSE"#);
        assert_eq!(filter_err("active < true").position, 7);
        assert_eq!(filter_err("active = yes").position, 9);
        assert_eq!(filter_err("active = \"true\"").position, 9);
        assert_eq!(filter_err("active = 1").position, 9);
    }

    #[test]
    fn timestamp_operators() {
        assert_eq!(
            pg_where("create_time >= \"2024-01-02T03:04:05Z\""),
            r#""created_at" >= '2024-01-02 03:04:05.000000 +00:00'"#
        );
        // offsets are normalised to UTC
        assert_eq!(
            pg_where("create_time < '2024-01-02T03:04:05+09:00'"),
            r#""created_at" < '2024-01-01 18:04:05.000000 +00:00'"#
        );
        assert_eq!(
            pg_where("create_time = 2024-01-02T03:04:05.5Z"),
            r#""created_at" = '2024-01-02 03:04:05.500000 +00:00'"#
        );
        for op in ["!=", "<=", ">"] {
            assert!(
                parse_filter(
                    &format!("create_time {op} \"2024-01-02T03:04:05Z\""),
                    FIELDS
                )
                .is_ok()
            );
        }
        let e = filter_err("age = 1 AND create_time > \"2024-13-02T03:04:05Z\"");
        assert_eq!(e.position, 26);
        assert!(e.message.contains("invalid timestamp"), "{e}");
        assert_eq!(filter_err("create_time > \"2024-01-02\"").position, 14);
        assert_eq!(
            filter_err("create_time : \"2024-01-02T03:04:05Z\"").position,
            12
        );
    }

    #[test]
    fn date_operators() {
        assert_eq!(
            pg_where("birthday = \"2000-02-29\""),
            r#""birth_date" = '2000-02-29'"#
        );
        assert_eq!(
            pg_where("birthday >= 1990-01-01"),
            r#""birth_date" >= '1990-01-01'"#
        );
        assert_eq!(pg_where("birthday:*"), r#""birth_date" IS NOT NULL"#);
        for bad in [
            "\"2001-02-29\"",
            "\"2000-2-29\"",
            "\"+2000-02-29\"",
            "20000229",
            "\"2000-02-29T00:00:00Z\"",
        ] {
            let e = filter_err(&format!("birthday < {bad}"));
            assert_eq!(e.position, 11, "{bad}");
            assert!(e.message.contains("invalid date"), "{e}");
        }
    }

    #[test]
    fn enum_operators() {
        assert_eq!(pg_where("state = ACTIVE"), r#""state" = 'ACTIVE'"#);
        assert_eq!(pg_where("state != \"DELETED\""), r#""state" <> 'DELETED'"#);
        let e = filter_err("state = active");
        assert_eq!(e.position, 8);
        assert!(e.message.contains("ACTIVE, INACTIVE, DELETED"), "{e}");
        assert_eq!(filter_err("state > ACTIVE").position, 6);
        assert_eq!(filter_err("state:ACTIVE").position, 5);
    }

    #[test]
    fn string_list_operators() {
        assert_eq!(
            sqlite_where("tags:\"VIP\""),
            r#""tags" LIKE '%|vip|%' ESCAPE '!'"#
        );
        assert_eq!(
            pg_where("tags:\"VIP\""),
            r#"string_to_array("tags", '|') @> string_to_array('vip', '|')"#
        );
        assert_eq!(
            sqlite_where("tags:a_b"),
            r#""tags" LIKE '%|a!_b|%' ESCAPE '!'"#
        );
        assert_eq!(
            pg_where("tags:*"),
            r#""tags" <> '||' AND "tags" IS NOT NULL"#
        );
        assert_eq!(filter_err("tags = vip").position, 5);
        let e = filter_err("tags:\"a|b\"");
        assert_eq!(e.position, 5);
        assert!(e.message.contains('|'), "{e}");
        assert_eq!(filter_err("tags:\"\"").position, 5);
    }

    #[test]
    fn boolean_structure_sql() {
        assert_eq!(
            pg_where("age > 1 AND state = ACTIVE OR display_name:x"),
            r#""age" > 1 AND ("state" = 'ACTIVE' OR ("display_name" ~ '[Xx]'))"#
        );
        assert_eq!(
            sqlite_where("age > 1 AND state = ACTIVE OR -display_name:x"),
            r#""age" > 1 AND ("state" = 'ACTIVE' OR (NOT ("display_name" REGEXP '[Xx]')))"#
        );
        assert_eq!(
            sqlite_where("NOT (age = 1 OR age = 2) -active = true"),
            r#"(NOT ("age" = 1 OR "age" = 2)) AND (NOT "is_active" = TRUE)"#
        );
        assert_eq!(
            sqlite_where("tags:* AND -tags:vip"),
            r#""tags" <> '||' AND "tags" IS NOT NULL AND (NOT "tags" LIKE '%|vip|%' ESCAPE '!')"#
        );
    }

    #[test]
    fn literals_are_bound_as_parameters() {
        let filter = "display_name = \"x'; DROP TABLE t; --\" AND display_name:abc AND tags:vip \
             AND age > 3 AND create_time < \"2024-01-02T03:04:05Z\" AND birthday = 2000-01-01 \
             AND display_name = \"a'b*\"";
        let cond = parse_filter_for(filter, FIELDS, Dialect::Postgres)
            .unwrap()
            .unwrap();
        let (sql, values) = Query::select()
            .column("id")
            .from("contacts")
            .cond_where(cond)
            .build(PostgresQueryBuilder);
        assert_eq!(
            sql,
            r#"SELECT "id" FROM "contacts" WHERE "display_name" = $1 AND ("display_name" ~ $2) AND (string_to_array("tags", '|') @> string_to_array($3, '|')) AND "age" > $4 AND "created_at" < $5 AND "birth_date" = $6 AND "display_name" LIKE $7 ESCAPE '!'"#
        );
        assert_eq!(values.0.len(), 7);
        assert_eq!(values.0[0], sea_query::Value::from("x'; DROP TABLE t; --"));
        assert_eq!(values.0[1], sea_query::Value::from("[Aa][Bb][Cc]"));
        let cond = parse_filter(filter, FIELDS).unwrap().unwrap();
        let (sql, values) = Query::select()
            .column("id")
            .from("contacts")
            .cond_where(cond)
            .build(SqliteQueryBuilder);
        assert_eq!(
            sql,
            r#"SELECT "id" FROM "contacts" WHERE "display_name" = ? AND ("display_name" REGEXP ?) AND "tags" LIKE ? ESCAPE '!' AND "age" > ? AND "created_at" < ? AND "birth_date" = ? AND ("display_name" GLOB ?)"#
        );
        assert_eq!(values.0.len(), 7);
        assert_eq!(values.0[1], sea_query::Value::from("[Aa][Bb][Cc]"));
        assert_eq!(values.0[6], sea_query::Value::from("a'b*"));
    }

    #[test]
    fn compile_rejects_hand_built_pathological_asts() {
        let mut e = int("age", 1);
        for _ in 0..(MAX_AST_DEPTH + 5) {
            e = Expr::Not(Box::new(e));
        }
        assert!(compile(&e, FIELDS).is_err());
        assert!(compile(&Expr::And(vec![]), FIELDS).is_err());
        assert!(compile(&cmp("age", Op::Eq, Literal::Any), FIELDS).is_err());
    }

    // ----- order_by -------------------------------------------------------

    #[test]
    fn order_by_parses() {
        assert!(parse_order_by("", FIELDS).unwrap().is_empty());
        assert!(parse_order_by("   ", FIELDS).unwrap().is_empty());
        let terms = parse_order_by(" age desc ,display_name, create_time   ASC", FIELDS).unwrap();
        assert_eq!(
            terms,
            vec![
                OrderTerm {
                    field: "age",
                    column: "age",
                    ty: FieldType::Int64,
                    descending: true
                },
                OrderTerm {
                    field: "display_name",
                    column: "display_name",
                    ty: FieldType::String,
                    descending: false
                },
                OrderTerm {
                    field: "create_time",
                    column: "created_at",
                    ty: FieldType::Timestamp,
                    descending: false
                },
            ]
        );
        assert_eq!(
            parse_order_by("address.city", FIELDS).unwrap()[0].column,
            "address_city"
        );
    }

    #[test]
    fn order_by_errors() {
        let e = parse_order_by("age, foo desc", FIELDS).unwrap_err();
        assert_eq!(
            (e.position, e.message.as_str()),
            (5, "unknown field \"foo\"")
        );
        let e = parse_order_by("age, tags", FIELDS).unwrap_err();
        assert_eq!(e.position, 5);
        assert!(e.message.contains("not sortable"), "{e}");
        let e = parse_order_by("age, display_name, age desc", FIELDS).unwrap_err();
        assert_eq!(e.position, 19);
        assert!(e.message.contains("duplicate"), "{e}");
        let e = parse_order_by("age sideways", FIELDS).unwrap_err();
        assert_eq!(e.position, 4);
        let e = parse_order_by("age desc extra", FIELDS).unwrap_err();
        assert_eq!(e.position, 9);
        assert_eq!(
            parse_order_by("age,,state", FIELDS).unwrap_err().position,
            4
        );
        assert_eq!(parse_order_by("age, ", FIELDS).unwrap_err().position, 5);
        assert_eq!(parse_order_by(",age", FIELDS).unwrap_err().position, 0);
        assert_eq!(parse_order_by("東京, age", FIELDS).unwrap_err().position, 0);
        assert_eq!(parse_order_by("age, 東京", FIELDS).unwrap_err().position, 5);
        assert!(
            parse_order_by(&"a,".repeat(5000), FIELDS)
                .unwrap_err()
                .message
                .contains("too long")
        );
    }

    // ----- property tests -------------------------------------------------

    fn token_soup() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("(".to_string()),
            Just(")".to_string()),
            Just(" AND ".to_string()),
            Just(" OR ".to_string()),
            Just("NOT ".to_string()),
            Just("-".to_string()),
            Just(" ".to_string()),
            Just("=".to_string()),
            Just("!=".to_string()),
            Just("<".to_string()),
            Just("<=".to_string()),
            Just(">".to_string()),
            Just(">=".to_string()),
            Just(":".to_string()),
            Just("*".to_string()),
            Just("\"".to_string()),
            Just("'".to_string()),
            Just("\\".to_string()),
            Just("age".to_string()),
            Just("display_name".to_string()),
            Just("active".to_string()),
            Just("create_time".to_string()),
            Just("birthday".to_string()),
            Just("state".to_string()),
            Just("tags".to_string()),
            Just("address.city".to_string()),
            Just("secret".to_string()),
            Just("ACTIVE".to_string()),
            Just("true".to_string()),
            Just("-7".to_string()),
            Just("99999999999999999999".to_string()),
            Just("\"2024-01-02T03:04:05Z\"".to_string()),
            Just("2000-01-01".to_string()),
            Just("\"a%_!*\"".to_string()),
            Just("\"|\"".to_string()),
            Just("東京".to_string()),
            "\\PC{0,3}",
        ];
        // Well-formed comparisons, so that many generated filters parse and reach compile().
        let field = prop::sample::select(vec![
            "age",
            "display_name",
            "active",
            "create_time",
            "birthday",
            "state",
            "tags",
            "address.city",
            "secret",
            "nope",
        ]);
        let op = prop::sample::select(vec!["=", "!=", "<", "<=", ">", ">=", ":"]);
        let value = prop::sample::select(vec![
            "1",
            "-7",
            "007",
            "99999999999999999999",
            "true",
            "*",
            "ACTIVE",
            "abc*",
            "\"a%_!*\"",
            "\"VIP\"",
            "\"a|b\"",
            "\"\"",
            "\"2024-01-02T03:04:05+09:00\"",
            "2000-02-29",
            "\"2001-02-29\"",
            "東京",
        ]);
        let comparison = (field, op, value).prop_map(|(f, o, v)| format!(" {f} {o} {v} "));
        let valid = prop::sample::select(vec![
            "age >= 7",
            "age != -1",
            "display_name:abc",
            "display_name = \"a%_!*\"",
            "display_name < 東京",
            "tags:*",
            "tags:VIP",
            "state != ACTIVE",
            "active = true",
            "create_time < \"2024-01-02T03:04:05+09:00\"",
            "birthday = 2000-02-29",
            "address.city:東京",
        ]);
        let connector = prop::sample::select(vec![" AND ", " OR ", " NOT ", " -", " (", ") ", " "]);
        let structured = prop::collection::vec(
            prop_oneof![
                3 => valid.prop_map(|c| format!(" {c} ")),
                1 => comparison.clone(),
                2 => connector.prop_map(str::to_string),
            ],
            1..16,
        )
        .prop_map(|v| v.concat());
        let piece = prop_oneof![3 => token, 2 => comparison];
        let noisy = prop::collection::vec(piece, 0..40).prop_map(|v| v.concat());
        prop_oneof![noisy, structured]
    }

    fn arb_field() -> impl Strategy<Value = String> {
        "[a-z_][a-z0-9_]{0,6}(\\.[a-z_][a-z0-9_]{0,4})?"
    }

    fn arb_literal() -> impl Strategy<Value = Literal> {
        prop_oneof![
            prop::collection::vec(
                prop_oneof![
                    any::<char>(),
                    Just('"'),
                    Just('\''),
                    Just('\\'),
                    Just('\n'),
                    Just('\t'),
                    Just('*'),
                    Just('東'),
                ],
                0..8
            )
            .prop_map(|v| Literal::String(v.into_iter().collect())),
            "[A-Za-z東][A-Za-z0-9_.*:+東-]{0,8}"
                .prop_filter("keywords are literals", |s| s != "true" && s != "false")
                .prop_map(Literal::Text),
            "0[0-9]{1,4}".prop_map(Literal::Text),
            any::<i64>().prop_map(Literal::Int),
            any::<bool>().prop_map(Literal::Bool),
        ]
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Eq),
            Just(Op::Ne),
            Just(Op::Lt),
            Just(Op::Le),
            Just(Op::Gt),
            Just(Op::Ge),
            Just(Op::Has),
        ]
    }

    fn arb_comparison() -> impl Strategy<Value = Expr> {
        (arb_field(), arb_op(), arb_literal(), any::<bool>()).prop_map(
            |(field, op, value, star)| {
                let value = if op == Op::Has && star {
                    Literal::Any
                } else {
                    value
                };
                cmp(&field, op, value)
            },
        )
    }

    fn arb_expr() -> impl Strategy<Value = Expr> {
        arb_comparison().prop_recursive(5, 48, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
                prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
                inner.prop_map(|e| Expr::Not(Box::new(e))),
            ]
        })
    }

    fn check_no_panic(input: &str) {
        if let Ok(Some(expr)) = parse(input) {
            // Display must produce text that parses to the same AST.
            let again = parse(&expr.to_string()).unwrap().unwrap();
            assert_eq!(strip(&again), strip(&expr), "{input}");
            if let Ok(cond) = compile(&expr, FIELDS) {
                let mut q = Query::select();
                q.column("id").from("contacts").cond_where(cond);
                let _ = q.to_string(PostgresQueryBuilder);
                let _ = q.to_string(SqliteQueryBuilder);
                let _ = q.build(PostgresQueryBuilder);
            }
        }
        let _ = parse_order_by(input, FIELDS);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parse_never_panics_on_arbitrary_strings(s in any::<String>()) {
            check_no_panic(&s);
        }

        #[test]
        fn parse_never_panics_on_printable_text(s in "\\PC{0,200}") {
            check_no_panic(&s);
        }

        #[test]
        fn parse_and_compile_never_panic_on_token_soup(s in token_soup()) {
            check_no_panic(&s);
        }

        #[test]
        fn parse_never_panics_on_deep_nesting(
            open in 0usize..10_001,
            prefix in prop_oneof![Just("("), Just("-("), Just("NOT ("), Just("東(")],
            tail in "\\PC{0,20}",
        ) {
            let s = format!("{}{}{}", prefix.repeat(open / prefix.len().max(1)), tail, ")".repeat(open % 50));
            check_no_panic(&s);
        }

        #[test]
        fn display_round_trips(expr in arb_expr()) {
            let text = expr.to_string();
            let parsed = parse(&text);
            prop_assert!(parsed.is_ok(), "{text}: {parsed:?}");
            let parsed = parsed.unwrap();
            prop_assert_eq!(parsed.as_ref().map(strip), Some(strip(&expr)), "{}", text);
            let _ = compile(&expr, FIELDS);
        }

        /// The generated pattern, matched case-sensitively as both databases do, finds
        /// exactly what the regex crate's Unicode `(?i)` finds for the escaped literal.
        #[test]
        fn fold_pattern_is_case_insensitive_contains(
            needle in "[aAkKsSſσςΣßẞİıiIÄäÉé山%_.*\\\\\\[\\]()|^$?+{}#&~-]{0,3}|\\PC{0,3}",
            hay in "[aAkKsSſσςΣßẞİıiIÄäÉé山%_.*\\\\\\[\\]()|^$?+{}#&~-]{0,6}|\\PC{0,6}",
        ) {
            let ours = regex::Regex::new(&fold_pattern(&needle)).unwrap();
            let reference = format!("(?i){}", regex::escape(&needle));
            let reference = regex::Regex::new(&reference).unwrap();
            let (got, want) = (ours.is_match(&hay), reference.is_match(&hay));
            prop_assert_eq!(got, want, "{:?} in {:?}", needle, hay);
            let embedded = format!("x{}y", needle);
            prop_assert!(ours.is_match(&embedded));
        }

        #[test]
        fn order_by_never_panics(s in "[a-z_., \\t東]{0,60}|\\PC{0,60}") {
            let _ = parse_order_by(&s, FIELDS);
        }
    }

    #[test]
    fn deepest_accepted_filter_fits_a_small_stack() {
        // Deepest AST the parser accepts: every paren level adds NOT, AND and OR nodes.
        let mut text = "age = 1".to_string();
        for _ in 0..MAX_DEPTH {
            text = format!("-(age = 1 OR {text} age = 2)");
        }
        let handle = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                let expr = parse(&text).unwrap().unwrap();
                let again = parse(&expr.to_string()).unwrap().unwrap();
                assert_eq!(strip(&again), strip(&expr));
                let cond = compile(&expr, FIELDS).unwrap();
                let mut q = Query::select();
                q.column("id").from("contacts").cond_where(cond);
                q.to_string(PostgresQueryBuilder).len()
            })
            .unwrap();
        assert!(handle.join().unwrap() > 0);
    }

    #[test]
    fn huge_inputs_do_not_panic() {
        check_no_panic(&"(".repeat(10_000));
        check_no_panic(&"東".repeat(10_000));
        check_no_panic(&format!("{}age = 1", "(".repeat(8000)));
    }
}

#[cfg(test)]
mod dialect_tests {
    use super::*;
    use sea_orm::sea_query::{PostgresQueryBuilder, Query};

    #[test]
    fn postgres_list_membership_uses_the_tag_array() {
        let fields = [
            FilterField {
                name: "region",
                column: "region",
                ty: FieldType::String,
                filterable: true,
                sortable: true,
            },
            FilterField {
                name: "tags",
                column: "tags",
                ty: FieldType::StringList,
                filterable: true,
                sortable: false,
            },
        ];
        let cond = parse_filter_for(
            "region = \"DE\" AND tags:\"VIP\"",
            &fields,
            Dialect::Postgres,
        )
        .ok()
        .flatten();
        let mut q = Query::select();
        q.column("id").from("contacts");
        if let Some(c) = cond {
            q.cond_where(c);
        }
        let (sql, values) = q.build(PostgresQueryBuilder);
        assert!(
            sql.contains(r#"string_to_array("tags", '|') @> string_to_array($2, '|')"#),
            "{sql}"
        );
        assert_eq!(values.0.len(), 2);
    }
}
