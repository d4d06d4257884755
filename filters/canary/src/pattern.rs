//! The `regex` test of canary conditions: a small regular-expression matcher.
//!
//! Patterns compile once (configure time) into a Thompson program that a Pike
//! VM runs: time is linear in the value's length times the program's size,
//! whatever the pattern, so a header value cannot make a rule expensive. It
//! replaces the regex-lite crate (about 50 KB of the module; the header-only
//! budget is 200 KB), which stays as the test oracle: the native tests check
//! this matcher against it on generated patterns and values.
//!
//! Syntax (a subset of Rust's `regex`, with the same meaning): literals, `.`
//! (any character but `\n`), `^` and `$` (start and end of the value), groups
//! `(...)` and `(?:...)`, `|`, `*`, `+`, `?`, `{n}`, `{n,}`, `{n,m}` (a lazy
//! `?` suffix is accepted; it changes nothing for a yes/no match), classes
//! `[a-z0-9_]` and `[^...]`, the ASCII classes `\d \w \s` and their negations
//! `\D \W \S`, the escapes `\n \t \r \f \v` and any escaped ASCII punctuation but `<` and `>`.
//! Anything else (inline flags, `\b`, `\p{..}`, nested classes) is an error
//! at configure time, never a silent difference.

use std::cell::RefCell;

/// Program size bound (instructions); `{n,m}` copies its operand.
pub const MAX_INSTRUCTIONS: usize = 2048;
/// Bound of `n` and `m` in `{n,m}`.
pub const MAX_REPEAT: u32 = 256;
const SET_OPERATIONS: &str = "class set operations are not supported";
/// Bound of group nesting (the parser recurses per group).
const MAX_DEPTH: usize = 32;

/// Inclusive ranges of Unicode scalar values; `negated` matches the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Class {
    ranges: Vec<(u32, u32)>,
    negated: bool,
}

impl Class {
    fn matches(&self, c: char) -> bool {
        let c = u32::from(c);
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }
}

const DIGIT: &[(u32, u32)] = &[(0x30, 0x39)];
const WORD: &[(u32, u32)] = &[(0x30, 0x39), (0x41, 0x5a), (0x5f, 0x5f), (0x61, 0x7a)];
/// `[\t\n\v\f\r ]`, as Rust's regex defines ASCII `\s`.
const SPACE: &[(u32, u32)] = &[(0x09, 0x0d), (0x20, 0x20)];

/// The complement of sorted, non-overlapping ranges.
fn complement(ranges: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    let mut next = 0u32;
    for &(lo, hi) in ranges {
        if lo > next {
            out.push((next, lo - 1));
        }
        next = hi.saturating_add(1);
    }
    if next <= u32::from(char::MAX) {
        out.push((next, u32::from(char::MAX)));
    }
    out
}

#[derive(Debug)]
enum Node {
    Char(char),
    /// Any character but `\n`.
    Any,
    Class(Class),
    Start,
    End,
    Concat(Vec<Node>),
    Alt(Vec<Node>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
    },
}

/// What an escape stands for.
enum Escaped {
    Char(char),
    Class(&'static [(u32, u32)], bool),
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn fail<T>(&self, message: &str) -> Result<T, String> {
        Err(format!("{message} (at character {})", self.pos))
    }

    fn alternation(&mut self) -> Result<Node, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.fail("groups nested too deeply");
        }
        let mut branches = vec![self.concatenation()?];
        while self.eat('|') {
            branches.push(self.concatenation()?);
        }
        self.depth -= 1;
        Ok(match branches.pop() {
            Some(only) if branches.is_empty() => only,
            Some(last) => {
                branches.push(last);
                Node::Alt(branches)
            }
            None => Node::Concat(Vec::new()),
        })
    }

    fn concatenation(&mut self) -> Result<Node, String> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            items.push(self.quantified(atom)?);
        }
        Ok(Node::Concat(items))
    }

    fn atom(&mut self) -> Result<Node, String> {
        let Some(c) = self.next() else {
            return self.fail("unexpected end");
        };
        Ok(match c {
            '(' => {
                if self.peek() == Some('?') {
                    if self.peek_at(1) != Some(':') {
                        return self.fail("inline flags and named groups are not supported");
                    }
                    self.pos += 2;
                }
                let inner = self.alternation()?;
                if !self.eat(')') {
                    return self.fail("unclosed group");
                }
                inner
            }
            '[' => Node::Class(self.class()?),
            '.' => Node::Any,
            '^' => Node::Start,
            '$' => Node::End,
            '\\' => match self.escape()? {
                Escaped::Char(c) => Node::Char(c),
                Escaped::Class(ranges, negated) => Node::Class(Class {
                    ranges: ranges.to_vec(),
                    negated,
                }),
            },
            '*' | '+' | '?' | '{' => return self.fail("repetition operator without an operand"),
            c => Node::Char(c),
        })
    }

    fn escape(&mut self) -> Result<Escaped, String> {
        let Some(c) = self.next() else {
            return self.fail("incomplete escape");
        };
        Ok(match c {
            'd' => Escaped::Class(DIGIT, false),
            'D' => Escaped::Class(DIGIT, true),
            'w' => Escaped::Class(WORD, false),
            'W' => Escaped::Class(WORD, true),
            's' => Escaped::Class(SPACE, false),
            'S' => Escaped::Class(SPACE, true),
            'n' => Escaped::Char('\n'),
            't' => Escaped::Char('\t'),
            'r' => Escaped::Char('\r'),
            'f' => Escaped::Char('\u{c}'),
            'v' => Escaped::Char('\u{b}'),
            // `\<` and `\>` are word boundaries in Rust's regex.
            c if c.is_ascii_punctuation() && c != '<' && c != '>' => Escaped::Char(c),
            c => return self.fail(&format!("unsupported escape \\{c}")),
        })
    }

    /// The next character inside a class. `&&`, `--` and `~~` are set
    /// operations in Rust's regex: refused wherever they appear.
    fn class_next(&mut self) -> Result<Option<char>, String> {
        let c = self.next();
        if let Some(op @ ('&' | '-' | '~')) = c {
            if self.peek() == Some(op) {
                return self.fail(SET_OPERATIONS);
            }
        }
        Ok(c)
    }

    /// After `[`.
    fn class(&mut self) -> Result<Class, String> {
        let negated = self.eat('^');
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        let mut first = true;
        loop {
            let Some(c) = self.class_next()? else {
                return self.fail("unclosed character class");
            };
            if c == ']' && !first {
                break;
            }
            first = false;
            if c == '[' {
                return self.fail("nested classes and [:name:] are not supported");
            }
            let lo = match c {
                '\\' => match self.escape()? {
                    Escaped::Char(c) => c,
                    Escaped::Class(set, negated) => {
                        if self.peek() == Some('-') && !matches!(self.peek_at(1), Some(']') | None)
                        {
                            return self.fail("a class range cannot start with a class");
                        }
                        if negated {
                            ranges.extend(complement(set));
                        } else {
                            ranges.extend_from_slice(set);
                        }
                        continue;
                    }
                },
                c => c,
            };
            // `-` before `]` (or at the start) is a literal.
            let is_range = self.peek() == Some('-') && !matches!(self.peek_at(1), Some(']') | None);
            if !is_range {
                ranges.push((u32::from(lo), u32::from(lo)));
                continue;
            }
            if self.peek_at(1) == Some('-') {
                return self.fail(SET_OPERATIONS);
            }
            self.pos += 1;
            let hi = match self.class_next()? {
                Some('\\') => match self.escape()? {
                    Escaped::Char(c) => c,
                    Escaped::Class(..) => return self.fail("a class range cannot end in a class"),
                },
                Some('[') => return self.fail("nested classes and [:name:] are not supported"),
                Some(c) => c,
                None => return self.fail("unclosed character class"),
            };
            if hi < lo {
                return self.fail("class range out of order");
            }
            ranges.push((u32::from(lo), u32::from(hi)));
        }
        Ok(Class { ranges, negated })
    }

    fn number(&mut self) -> Result<Option<u32>, String> {
        let start = self.pos;
        let mut value: u32 = 0;
        while let Some(d) = self.peek().and_then(|c| c.to_digit(10)) {
            self.pos += 1;
            value = value.saturating_mul(10).saturating_add(d);
        }
        if self.pos == start {
            return Ok(None);
        }
        if value > MAX_REPEAT {
            return self.fail(&format!("repetition count above {MAX_REPEAT}"));
        }
        Ok(Some(value))
    }

    fn quantified(&mut self, atom: Node) -> Result<Node, String> {
        let single = match self.peek() {
            Some('*') => Some((0, None)),
            Some('+') => Some((1, None)),
            Some('?') => Some((0, Some(1))),
            Some('{') => None,
            _ => return Ok(atom),
        };
        let (min, max) = match single {
            Some(bounds) => {
                self.pos += 1;
                bounds
            }
            None => self.counted()?,
        };
        // Lazy or greedy: the same answer to "does it match".
        self.eat('?');
        if matches!(self.peek(), Some('*' | '+' | '?' | '{')) {
            return self.fail("nested repetition needs a group");
        }
        Ok(Node::Repeat {
            node: Box::new(atom),
            min,
            max,
        })
    }

    /// `{n}`, `{n,}` or `{n,m}`, consumed whole.
    fn counted(&mut self) -> Result<(u32, Option<u32>), String> {
        self.pos += 1;
        let Some(min) = self.number()? else {
            return self.fail("counted repetition needs a number");
        };
        let max = if self.eat(',') {
            self.number()?
        } else {
            Some(min)
        };
        if !self.eat('}') {
            return self.fail("unclosed counted repetition");
        }
        if max.is_some_and(|m| m < min) {
            return self.fail("counted repetition with max below min");
        }
        Ok((min, max))
    }
}

#[derive(Debug, Clone, Copy)]
enum Inst {
    Char(char),
    Any,
    Class(usize),
    Split(usize, usize),
    Jmp(usize),
    Start,
    End,
    Match,
}

struct Compiler {
    insts: Vec<Inst>,
    classes: Vec<Class>,
}

impl Compiler {
    fn push(&mut self, inst: Inst) -> Result<usize, String> {
        if self.insts.len() >= MAX_INSTRUCTIONS {
            return Err(format!(
                "pattern too large (more than {MAX_INSTRUCTIONS} instructions)"
            ));
        }
        self.insts.push(inst);
        Ok(self.insts.len() - 1)
    }

    fn patch(&mut self, at: usize, inst: Inst) {
        if let Some(slot) = self.insts.get_mut(at) {
            *slot = inst;
        }
    }

    fn emit(&mut self, node: &Node) -> Result<(), String> {
        match node {
            Node::Char(c) => self.push(Inst::Char(*c)).map(drop),
            Node::Any => self.push(Inst::Any).map(drop),
            Node::Start => self.push(Inst::Start).map(drop),
            Node::End => self.push(Inst::End).map(drop),
            Node::Class(class) => {
                let index = match self.classes.iter().position(|c| c == class) {
                    Some(i) => i,
                    None => {
                        self.classes.push(class.clone());
                        self.classes.len() - 1
                    }
                };
                self.push(Inst::Class(index)).map(drop)
            }
            Node::Concat(items) => items.iter().try_for_each(|n| self.emit(n)),
            Node::Alt(branches) => {
                // split L1, next; L1: a; jmp end; next: split L2, ...; last
                let mut jumps = Vec::with_capacity(branches.len());
                let count = branches.len();
                for (i, branch) in branches.iter().enumerate() {
                    if i + 1 == count {
                        self.emit(branch)?;
                        break;
                    }
                    let split = self.push(Inst::Match)?;
                    self.emit(branch)?;
                    jumps.push(self.push(Inst::Match)?);
                    let next = self.insts.len();
                    self.patch(split, Inst::Split(split + 1, next));
                }
                let end = self.insts.len();
                for jump in jumps {
                    self.patch(jump, Inst::Jmp(end));
                }
                Ok(())
            }
            Node::Repeat { node, min, max } => {
                for _ in 0..*min {
                    self.emit(node)?;
                }
                match max {
                    None => {
                        // loop: split body, end; body; jmp loop
                        let split = self.push(Inst::Match)?;
                        self.emit(node)?;
                        self.push(Inst::Jmp(split))?;
                        let end = self.insts.len();
                        self.patch(split, Inst::Split(split + 1, end));
                    }
                    Some(max) => {
                        // (x(x(x)?)?)?: every optional copy may end the repetition.
                        let mut splits = Vec::new();
                        for _ in *min..*max {
                            splits.push(self.push(Inst::Match)?);
                            self.emit(node)?;
                        }
                        let end = self.insts.len();
                        for split in splits {
                            self.patch(split, Inst::Split(split + 1, end));
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// Per-match working memory, kept with the pattern so matching does not
/// allocate once it has run (the VM is single-threaded).
#[derive(Debug, Clone, Default)]
struct Scratch {
    current: Vec<usize>,
    next: Vec<usize>,
    /// The step at which each instruction was last added (0: never).
    added: Vec<usize>,
    stack: Vec<usize>,
}

/// A compiled pattern; `is_match` finds it anywhere in a value (use `^...$`
/// to match the whole value).
#[derive(Clone)]
pub struct Pattern {
    source: String,
    insts: Vec<Inst>,
    classes: Vec<Class>,
    /// Starts with `^` in every way it can match: threads start at 0 only.
    anchored: bool,
    scratch: RefCell<Scratch>,
}

impl std::fmt::Debug for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

impl Pattern {
    pub fn new(source: &str) -> Result<Pattern, String> {
        let mut parser = Parser {
            chars: source.chars().collect(),
            pos: 0,
            depth: 0,
        };
        let node = parser.alternation()?;
        if parser.peek().is_some() {
            return parser.fail("unopened group");
        }
        let mut compiler = Compiler {
            insts: Vec::new(),
            classes: Vec::new(),
        };
        compiler.emit(&node)?;
        compiler.push(Inst::Match)?;
        let anchored = matches!(compiler.insts.first(), Some(Inst::Start));
        Ok(Pattern {
            source: source.to_string(),
            insts: compiler.insts,
            classes: compiler.classes,
            anchored,
            scratch: RefCell::new(Scratch::default()),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, text: &str) -> bool {
        match self.scratch.try_borrow_mut() {
            Ok(mut scratch) => self.run(text, &mut scratch),
            Err(_) => self.run(text, &mut Scratch::default()),
        }
    }

    /// Adds `pc` and what it reaches without consuming a character to
    /// `list`; true when that reaches `Match`.
    fn add(
        &self,
        s: &mut Scratch,
        into_next: bool,
        pc: usize,
        step: usize,
        at: (bool, bool),
    ) -> bool {
        let (at_start, at_end) = at;
        s.stack.clear();
        s.stack.push(pc);
        while let Some(pc) = s.stack.pop() {
            match s.added.get_mut(pc) {
                Some(mark) if *mark != step => *mark = step,
                _ => continue,
            }
            match self.insts.get(pc) {
                Some(Inst::Match) => return true,
                Some(Inst::Jmp(target)) => s.stack.push(*target),
                Some(Inst::Split(a, b)) => {
                    s.stack.push(*b);
                    s.stack.push(*a);
                }
                Some(Inst::Start) if at_start => s.stack.push(pc + 1),
                Some(Inst::End) if at_end => s.stack.push(pc + 1),
                Some(Inst::Start | Inst::End) => {}
                Some(_) => {
                    if into_next {
                        s.next.push(pc);
                    } else {
                        s.current.push(pc);
                    }
                }
                None => {}
            }
        }
        false
    }

    fn run(&self, text: &str, s: &mut Scratch) -> bool {
        s.current.clear();
        s.next.clear();
        s.added.clear();
        s.added.resize(self.insts.len(), 0);
        let mut step = 1;
        if self.add(s, false, 0, step, (true, text.is_empty())) {
            return true;
        }
        for (i, c) in text.char_indices() {
            step += 1;
            let at = (false, i + c.len_utf8() == text.len());
            s.next.clear();
            let mut k = 0;
            while let Some(&pc) = s.current.get(k) {
                k += 1;
                let advances = match self.insts.get(pc) {
                    Some(Inst::Char(x)) => *x == c,
                    Some(Inst::Any) => c != '\n',
                    Some(Inst::Class(index)) => {
                        self.classes.get(*index).is_some_and(|cl| cl.matches(c))
                    }
                    _ => false,
                };
                if advances && self.add(s, true, pc + 1, step, at) {
                    return true;
                }
            }
            if !self.anchored && self.add(s, true, 0, step, at) {
                return true;
            }
            std::mem::swap(&mut s.current, &mut s.next);
            if s.current.is_empty() && self.anchored {
                return false;
            }
        }
        false
    }
}

#[cfg(test)]
#[path = "pattern_tests.rs"]
mod tests;
