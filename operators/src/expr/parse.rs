//! Parsing an expression's text with sqlparser, bounded in size, and errors that point at
//! the character at fault with a caret.

use sqlparser::ast::{BinaryOperator, Expr, Ident, InTarget};
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, Tokenizer};

use crate::OpError;

/// The most `and` / `or` / `not` operators an expression may hold. Deeper expressions cost stack
/// in the parser's tree; long lists of alternatives belong in `col in (…)`.
pub const MAX_BOOLEAN_OPERATORS: usize = 1000;
/// The most other operators (comparisons, arithmetic, `||`, `is`, `in`, `between`, `like`, …)
/// an expression may hold: a chain of them nests as deep as it is long, in the parser and in
/// every walk over its tree.
pub const MAX_OTHER_OPERATORS: usize = 1000;

/// How many boolean and how many other operators the tokens hold. Literals, column names,
/// commas and parentheses are not operators (parentheses are bounded by sqlparser's own
/// recursion limit).
fn count_operators(tokens: &[Token]) -> (usize, usize) {
    let (mut boolean, mut other) = (0, 0);
    for token in tokens {
        match token {
            Token::Whitespace(_)
            | Token::Comma
            | Token::LParen
            | Token::RParen
            | Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::EOF => {}
            Token::Word(word) if word.quote_style.is_some() => {}
            Token::Word(word) => match word.keyword {
                Keyword::AND | Keyword::OR | Keyword::NOT => boolean += 1,
                Keyword::IS | Keyword::IN | Keyword::BETWEEN | Keyword::LIKE | Keyword::ILIKE => other += 1,
                _ => {}
            },
            _ => other += 1,
        }
    }
    (boolean, other)
}

/// The 0-based character position in `text` of a 1-based sqlparser location (line 0 is
/// sqlparser's "unknown": the start).
pub(crate) fn position(text: &str, location: Location) -> usize {
    if location.line == 0 {
        return 0;
    }
    let line = usize::try_from(location.line - 1).unwrap_or(usize::MAX);
    let before: usize = text.split('\n').take(line).map(|line| line.chars().count() + 1).sum();
    before + usize::try_from(location.column).unwrap_or(usize::MAX).saturating_sub(1)
}

/// A [`OpError::Expression`] at the 0-based character `position` of `text`. The quoted
/// expression is shown on one line (line breaks and tabs as spaces, one character each) so
/// that the caret lines up whatever the expression's layout.
pub(crate) fn expr_error(text: &str, position: usize, message: impl Into<String>) -> OpError {
    let shown: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    OpError::expression(&shown, position, message)
}

/// A sqlparser error as a [`OpError::Expression`], its "at Line: L, Column: C" turned into
/// a caret (at the end of the expression when the error carries no location).
fn syntax_error(text: &str, error: ParserError) -> OpError {
    let message = error.to_string();
    let message = message.strip_prefix("sql parser error: ").unwrap_or(&message);
    let (message, at) = match message.rfind(" at Line: ") {
        Some(start) => {
            let location = message[start + " at Line: ".len()..].split_once(", Column: ").and_then(|(line, rest)| {
                let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
                Some(Location { line: line.trim().parse().ok()?, column: column.parse().ok()? })
            });
            match location {
                Some(location) => (&message[..start], position(text, location)),
                None => (message, text.chars().count()),
            }
        }
        None => (message, text.chars().count()),
    };
    expr_error(text, at, message)
}

/// Parses the whole expression: trailing tokens are an error.
pub(crate) fn parse(text: &str) -> Result<Expr, OpError> {
    let dialect = GenericDialect {};
    // A text that does not tokenize is left to the parser, which reports where.
    let tokens = Tokenizer::new(&dialect, text).tokenize().unwrap_or_default();
    let (operators, others) = count_operators(&tokens);
    if operators > MAX_BOOLEAN_OPERATORS {
        return Err(expr_error(
            text,
            0,
            format!(
                "the expression has {operators} 'and' / 'or' / 'not' operators; at most {MAX_BOOLEAN_OPERATORS} are \
                 allowed (write long lists of alternatives as `column in (…)`)"
            ),
        ));
    }
    if others > MAX_OTHER_OPERATORS {
        return Err(expr_error(
            text,
            0,
            format!(
                "the expression has {others} comparison, arithmetic and other operators besides 'and' / 'or' / \
                 'not'; at most {MAX_OTHER_OPERATORS} are allowed (write long lists of alternatives as `column in (…)`)"
            ),
        ));
    }
    let mut parser = Parser::new(&dialect).try_with_sql(text).map_err(|e| syntax_error(text, e))?;
    let expr = parser.parse_expr().map_err(|e| syntax_error(text, e))?;
    if let Some(keyword) = keyword_as_column(&expr) {
        return Err(expr_error(
            text,
            position(text, keyword.span.start),
            format!("expected a column or a value, found the keyword '{}'", keyword.value),
        ));
    }
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(expr_error(
            text,
            position(text, next.span.start),
            format!("unexpected '{}' after the end of the expression", next.token),
        ));
    }
    Ok(expr)
}

/// The operands of a chain of one operator, `a op b op c …` (however sqlparser nested it),
/// left to right, found without recursion.
pub(crate) fn chain<'e>(expr: &'e Expr, operator: &BinaryOperator) -> Vec<&'e Expr> {
    let mut terms = Vec::new();
    let mut pending = vec![expr];
    while let Some(next) = pending.pop() {
        match next {
            Expr::BinaryOp { left, op, right } if op == operator => {
                pending.push(right);
                pending.push(left);
            }
            other => terms.push(other),
        }
    }
    terms
}

/// The first unquoted identifier that is one of the language's keywords: sqlparser reads
/// `age >= and x` as `age >= "and"` followed by `x`, and the error should point at `and`.
fn keyword_as_column(expr: &Expr) -> Option<&Ident> {
    const KEYWORDS: [&str; 6] = ["and", "or", "not", "in", "is", "null"];
    match expr {
        Expr::Identifier(ident)
            if ident.quote_style.is_none() && KEYWORDS.contains(&ident.value.to_ascii_lowercase().as_str()) =>
        {
            Some(ident)
        }
        Expr::BinaryOp { left, right, .. } => keyword_as_column(left).or_else(|| keyword_as_column(right)),
        Expr::UnaryOp { expr, .. } | Expr::Nested(expr) | Expr::IsNull(expr) | Expr::IsNotNull(expr) => {
            keyword_as_column(expr)
        }
        Expr::In { expr, target: InTarget::List(list), .. } => {
            keyword_as_column(expr).or_else(|| list.iter().find_map(keyword_as_column))
        }
        _ => None,
    }
}
