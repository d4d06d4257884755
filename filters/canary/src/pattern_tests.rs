use super::*;

fn matches(pattern: &str, text: &str) -> bool {
    match Pattern::new(pattern) {
        Ok(p) => p.is_match(text),
        Err(e) => panic!("{pattern:?} did not compile: {e}"),
    }
}

/// regex-lite, an independent implementation of the same syntax.
fn oracle(pattern: &str, text: &str) -> bool {
    match regex_lite::Regex::new(pattern) {
        Ok(re) => re.is_match(text),
        Err(e) => panic!("oracle rejected {pattern:?}: {e}"),
    }
}

#[test]
fn literal_patterns_match_anywhere_unless_anchored() {
    assert!(matches("rc", "build-rc-1"));
    assert!(!matches("^rc", "build-rc-1"));
    assert!(matches("^build", "build-rc-1"));
    assert!(matches("-1$", "build-rc-1"));
    assert!(!matches("^rc-[0-9]+$", "rc-12x"));
    assert!(matches("^rc-[0-9]+$", "rc-12"));
    assert!(matches("", "anything"));
    assert!(matches("^$", ""));
    assert!(!matches("^$", "x"));
}

#[test]
fn classes_escapes_and_repetition() {
    assert!(matches(r"^\d{3}-\w+$", "123-ab_c"));
    assert!(!matches(r"^\d{3}-\w+$", "12-abc"));
    assert!(matches(r"^[^a-c]+$", "xyz"));
    assert!(!matches(r"^[^a-c]+$", "xaz"));
    assert!(matches(r"^[-a]$", "-"));
    assert!(matches(r"^[a-]$", "-"));
    assert!(matches(r"^[]a]$", "]"));
    assert!(matches(r"^a\.b$", "a.b"));
    assert!(!matches(r"^a\.b$", "axb"));
    assert!(matches(r"^a.b$", "axb"));
    assert!(!matches(r"^a.b$", "a\nb"));
    assert!(matches(r"^(?:ab|cd){2,3}$", "abcdab"));
    assert!(!matches(r"^(?:ab|cd){2,3}$", "ab"));
    assert!(matches(r"^x{2,}$", "xxxx"));
    assert!(matches(r"^x*?y$", "xxy"));
    assert!(matches(r"^[\d_]+$", "1_2"));
    assert!(matches(r"^[\D]$", "a"));
    assert!(matches("^é+$", "éé"));
    assert!(matches(r"^\s\S$", " x"));
}

#[test]
fn unsupported_syntax_is_an_error_naming_what_and_where() {
    for (pattern, expected) in [
        ("(?i)beta", "inline flags"),
        (r"\bword", "unsupported escape \\b"),
        (r"\<word", "unsupported escape \\<"),
        (r"\p{L}", "unsupported escape \\p"),
        ("[[:alpha:]]", "nested classes"),
        ("[a&&b]", "set operations"),
        ("[+--]", "set operations"),
        ("[a--b]", "set operations"),
        ("[a~~]", "set operations"),
        ("a**", "nested repetition"),
        ("*a", "without an operand"),
        ("(unclosed", "unclosed group"),
        ("a)", "unopened group"),
        ("[z-a]", "out of order"),
        (r"[\d-9]", "cannot start with a class"),
        (r"[a-\d]", "cannot end in a class"),
        ("[abc", "unclosed character class"),
        ("a{3,2}", "max below min"),
        ("a{2", "unclosed counted repetition"),
        ("a{x}", "needs a number"),
        ("a{300}", "above 256"),
        ("(a{200}){200}", "pattern too large"),
        ("\\", "incomplete escape"),
    ] {
        match Pattern::new(pattern) {
            Ok(_) => panic!("{pattern:?} compiled"),
            Err(e) => assert!(e.contains(expected), "{pattern:?}: {e}"),
        }
    }
    let deep = format!("{}a{}", "(".repeat(40), ")".repeat(40));
    assert!(Pattern::new(&deep).is_err_and(|e| e.contains("nested too deeply")));
    assert!(Pattern::new("(a(b)c)").is_ok());
}

#[test]
fn time_is_linear_for_a_pattern_that_backtracks_exponentially() {
    // (a|a)*b against a long run of a's: a backtracker takes 2^n steps.
    let p = Pattern::new("^(a|a)*b$").unwrap_or_else(|e| panic!("{e}"));
    assert!(!p.is_match(&"a".repeat(5000)));
    assert!(p.is_match(&format!("{}b", "a".repeat(5000))));
}

/// xorshift: deterministic generated cases.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const ATOMS: &[&str] = &[
    "a", "b", "c", "-", "1", "é", ".", r"\.", r"\d", r"\w", r"\s", r"\D", r"\W", "[abc]", "[a-c]",
    "[^a]", "[a-]", r"[\d_]", "[^\\w]", "[é-ê]", " ",
];
const QUANTIFIERS: &[&str] = &[
    "", "", "", "*", "+", "?", "{2}", "{1,3}", "{0,}", "*?", "{0,2}",
];
const TEXT: &[&str] = &["a", "b", "c", "1", "_", " ", "-", ".", "é", "\n", "x", "ab"];

fn gen_pattern(g: &mut Gen, depth: usize) -> String {
    let mut out = String::new();
    if g.below(6) == 0 {
        out.push('^');
    }
    let branches = 1 + g.below(if depth > 1 { 1 } else { 3 });
    for b in 0..branches {
        if b > 0 {
            out.push('|');
        }
        for _ in 0..1 + g.below(4) {
            let atom = if depth < 2 && g.below(5) == 0 {
                let open = if g.below(2) == 0 { "(" } else { "(?:" };
                format!("{open}{})", gen_pattern(g, depth + 1))
            } else {
                g.pick(ATOMS).to_string()
            };
            out.push_str(&atom);
            out.push_str(g.pick(QUANTIFIERS));
        }
    }
    if g.below(6) == 0 {
        out.push('$');
    }
    out
}

#[test]
fn generated_patterns_agree_with_regex_lite() {
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let mut matched = 0;
    let mut checked = 0;
    for _ in 0..3000 {
        let pattern = gen_pattern(&mut g, 0);
        let ours = Pattern::new(&pattern).unwrap_or_else(|e| panic!("{pattern:?}: {e}"));
        for _ in 0..25 {
            let text: String = (0..g.below(9)).map(|_| g.pick(TEXT)).collect();
            let expected = oracle(&pattern, &text);
            assert_eq!(ours.is_match(&text), expected, "{pattern:?} on {text:?}");
            matched += usize::from(expected);
            checked += 1;
        }
    }
    // The generated cases exercise both answers.
    assert!(
        matched > checked / 10 && matched < checked * 9 / 10,
        "{matched}/{checked}"
    );
}

#[test]
fn a_pattern_reentered_while_matching_still_answers() {
    let p = Pattern::new("^a+$").unwrap_or_else(|e| panic!("{e}"));
    let _held = p.scratch.borrow_mut();
    assert!(p.is_match("aaa"));
    assert!(!p.is_match("aab"));
}
