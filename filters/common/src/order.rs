//! Sorting for configure-time lists (errors, host patterns, secret names).
//!
//! Why not `slice::sort`: std's stable sort (driftsort) is about 3.5 KB of
//! code per element type in a module, and every module sorts two or three
//! types: about 7 KB of the single-filter modules' 200 KB budget
//! (docs/PERFORMANCE.md, "Module sizes"). These lists are short and sorted
//! once per configuration, and their orders are total, so stability does not
//! matter: a heapsort (O(n log n), in place, no allocation) is enough.

/// Sorts `items` so that no later item is `less` than an earlier one.
/// `less` must be a strict total order for the result to be sorted.
pub fn sort_by<T>(items: &mut [T], mut less: impl FnMut(&T, &T) -> bool) {
    let n = items.len();
    for root in (0..n / 2).rev() {
        sift_down(items, root, n, &mut less);
    }
    for end in (1..n).rev() {
        items.swap(0, end);
        sift_down(items, 0, end, &mut less);
    }
}

/// Sorts by the type's own order.
pub fn sort<T: Ord>(items: &mut [T]) {
    sort_by(items, |a, b| a < b);
}

/// Moves `items[root]` down the max-heap held in `items[..end]`.
fn sift_down<T>(
    items: &mut [T],
    mut root: usize,
    end: usize,
    less: &mut impl FnMut(&T, &T) -> bool,
) {
    let mut before = |items: &[T], a: usize, b: usize| match (items.get(a), items.get(b)) {
        (Some(x), Some(y)) => less(x, y),
        _ => false,
    };
    loop {
        let mut child = 2 * root + 1;
        if child >= end {
            return;
        }
        if child + 1 < end && before(items, child, child + 1) {
            child += 1;
        }
        if !before(items, root, child) {
            return;
        }
        items.swap(root, child);
        root = child;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// std's sort is the independent implementation these are checked against.
    #[test]
    fn sorts_like_std_on_every_short_input_and_random_long_ones() {
        // Every sequence of length 0..=6 over 3 values (duplicates included).
        for len in 0..=6u32 {
            for code in 0..3u32.pow(len) {
                let mut v: Vec<u32> = (0..len).map(|i| code / 3u32.pow(i) % 3).collect();
                let mut want = v.clone();
                want.sort();
                sort(&mut v);
                assert_eq!(v, want);
            }
        }
        let mut seed = 0x9e37_79b9_u64;
        for len in [7usize, 31, 100, 1000] {
            let mut v: Vec<String> = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    format!("k{}", seed >> 52)
                })
                .collect();
            let mut want = v.clone();
            want.sort();
            sort(&mut v);
            assert_eq!(v, want);
        }
    }

    #[test]
    fn sort_by_follows_the_given_order() {
        let mut v = vec!["b", "ccc", "a", "dd"];
        sort_by(&mut v, |a, b| {
            a.len() > b.len() || (a.len() == b.len() && a < b)
        });
        assert_eq!(v, ["ccc", "dd", "a", "b"]);
    }
}
