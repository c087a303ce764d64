//! Interventional TreeSHAP for ONNX tree ensembles (`TreeEnsembleRegressor` and
//! `TreeEnsembleClassifier` of `ai.onnx.ml`, and the newer `TreeEnsemble` of opset 5),
//! read from the model's graph.
//!
//! The explained value is one column of the ensemble's raw score: the sum over trees of the
//! reached leaves' weights for that target or class, plus its base value, before any
//! post-transform (`LOGISTIC`, `SOFTMAX`). For each background row `r` the attributions
//! are the exact Shapley values of `S ↦ f(x_S, r_¬S)` (Lundberg et al., *From local
//! explanations to global understanding with explainable AI for trees*, 2020, the
//! "interventional" algorithm): walking a tree with `x` and `r` together, a split that sends
//! them the same way needs no feature; one that parts them makes its feature required in
//! `S` (follow `x`) or out of it (follow `r`). A leaf reached with `A` features required in
//! and `B` required out contributes, for its weight `v`, `v · (|A| − 1)! |B|! / (|A| + |B|)!`
//! to each feature of `A` and `−v · |A|! (|B| − 1)! / (|A| + |B|)!` to each of `B`. The
//! results are averaged over the background, so they add up to `f(x) − mean_r f(r)`
//! exactly. Nothing depends on the trees' node counts or hit rates, which ONNX leaves
//! optional. Each node is visited at most once per (row, background row): a split that
//! parts `x` and `r` sends one walk down each side, but every subtree still hangs from one
//! path. Cost: at most `B ×` the ensemble's nodes a row, about `B × trees × depth` in
//! practice.

use std::collections::HashMap;

use crate::onnx_graph::Node;

/// The deepest tree read (scikit-learn, XGBoost and LightGBM trees are far shallower).
const MAX_DEPTH: usize = 512;

/// A split's comparison (`nodes_modes`); `Leaf` ends a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Leaf,
}

#[derive(Debug, Clone, PartialEq)]
enum TreeNode {
    Split { feature: usize, threshold: f64, mode: Mode, yes: usize, no: usize, missing_yes: bool },
    Leaf { value: f64 },
}

/// The explained column of a tree ensemble's raw score.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeEnsemble {
    /// Each tree's nodes, and the index of its root.
    trees: Vec<(Vec<TreeNode>, usize)>,
    base: f64,
    /// Whether the model's output is this raw score itself (no post-transform).
    pub raw_output: bool,
    /// Whether splits compare in `float`, as ONNX Runtime does for a float model.
    float32: bool,
}

/// Reads the ensemble of `node` for output column `column` of `width` columns; `None` when
/// the node is not a tree ensemble Weir reads (another op, an aggregate other than a sum
/// or average, malformed attributes).
pub fn read_ensemble(node: &Node, column: usize, width: usize, features: usize, float32: bool) -> Option<TreeEnsemble> {
    if node.op_type == "TreeEnsemble" && node.domain == "ai.onnx.ml" {
        return read_tree_ensemble(node, column, features, float32);
    }
    let (prefix, ids) = match (node.op_type.as_str(), node.domain.as_str()) {
        ("TreeEnsembleRegressor", "ai.onnx.ml") => ("target", "target_ids"),
        ("TreeEnsembleClassifier", "ai.onnx.ml") => ("class", "class_ids"),
        _ => return None,
    };
    let ints = |name: &str| node.attribute(name).map(|a| a.ints.clone()).unwrap_or_default();
    let floats = |name: &str| node.attribute(name).map(|a| a.floats.clone()).unwrap_or_default();
    let text = |name: &str| node.attribute(name).and_then(|a| a.s.clone()).unwrap_or_default();
    let (tree_ids, node_ids, feature_ids) = (ints("nodes_treeids"), ints("nodes_nodeids"), ints("nodes_featureids"));
    let (values, yes_ids, no_ids) = (floats("nodes_values"), ints("nodes_truenodeids"), ints("nodes_falsenodeids"));
    let modes = node.attribute("nodes_modes")?.strings.clone();
    let missing = ints("nodes_missing_value_tracks_true");
    let n = tree_ids.len();
    let same_length = [node_ids.len(), feature_ids.len(), values.len(), yes_ids.len(), no_ids.len(), modes.len()];
    if n == 0 || same_length.iter().any(|&len| len != n) || !(missing.is_empty() || missing.len() == n) {
        return None;
    }
    let (weight_trees, weight_nodes) = (ints(&format!("{prefix}_treeids")), ints(&format!("{prefix}_nodeids")));
    let (weight_ids, weights) = (ints(ids), floats(&format!("{prefix}_weights")));
    if [weight_nodes.len(), weight_ids.len(), weights.len()].iter().any(|&len| len != weight_trees.len()) {
        return None;
    }
    // Which weight column is explained. A binary classifier may carry one column of scores
    // for its second class (the first is derived from it): only that one is explained.
    let distinct: std::collections::BTreeSet<i64> = weight_ids.iter().copied().collect();
    let (wanted, base_index) = if prefix == "class" && distinct.len() == 1 && width == 2 {
        (column == 1).then_some((*distinct.first()?, 0))?
    } else {
        (column as i64, column)
    };
    let base_values = floats("base_values");
    let base = match base_values.len() {
        0 => 0.0,
        len if base_index < len => base_values[base_index] as f64,
        _ => return None,
    };
    let aggregate = text("aggregate_function");
    let averaged = match aggregate.as_slice() {
        b"" | b"SUM" => false,
        b"AVERAGE" => true,
        _ => return None,
    };

    // Trees in order of first appearance; node ids mapped to indices within their tree.
    let mut tree_order: Vec<i64> = Vec::new();
    let mut index_of: HashMap<(i64, i64), usize> = HashMap::new();
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for (&tree, &id) in tree_ids.iter().zip(&node_ids) {
        let count = counts.entry(tree).or_insert_with(|| {
            tree_order.push(tree);
            0
        });
        index_of.insert((tree, id), *count);
        *count += 1;
    }
    let mut leaf_values: HashMap<(i64, i64), f64> = HashMap::new();
    for (((&tree, &id), &target), &weight) in weight_trees.iter().zip(&weight_nodes).zip(&weight_ids).zip(&weights) {
        if target == wanted {
            *leaf_values.entry((tree, id)).or_default() += weight as f64;
        }
    }
    let mut trees: Vec<Vec<TreeNode>> = tree_order.iter().map(|t| Vec::with_capacity(counts[t])).collect();
    let position: HashMap<i64, usize> = tree_order.iter().enumerate().map(|(i, &t)| (t, i)).collect();
    for i in 0..n {
        let tree = tree_ids[i];
        let mode = match modes[i].as_slice() {
            b"BRANCH_LEQ" => Mode::Leq,
            b"BRANCH_LT" => Mode::Lt,
            b"BRANCH_GTE" => Mode::Gte,
            b"BRANCH_GT" => Mode::Gt,
            b"BRANCH_EQ" => Mode::Eq,
            b"BRANCH_NEQ" => Mode::Neq,
            b"LEAF" => Mode::Leaf,
            _ => return None,
        };
        let built = if mode == Mode::Leaf {
            let value = leaf_values.get(&(tree, node_ids[i])).copied().unwrap_or(0.0);
            TreeNode::Leaf { value }
        } else {
            let feature = usize::try_from(feature_ids[i]).ok().filter(|&f| f < features)?;
            TreeNode::Split {
                feature,
                threshold: values[i] as f64,
                mode,
                yes: *index_of.get(&(tree, yes_ids[i]))?,
                no: *index_of.get(&(tree, no_ids[i]))?,
                missing_yes: missing.get(i).is_some_and(|&m| m != 0),
            }
        };
        trees[position[&tree]].push(built);
    }
    if averaged {
        let count = trees.len() as f64;
        for node in trees.iter_mut().flatten() {
            if let TreeNode::Leaf { value } = node {
                *value /= count;
            }
        }
    }
    let trees = trees.into_iter().map(|tree| root_of(&tree).map(|root| (tree, root))).collect::<Option<Vec<_>>>()?;
    let transform = text("post_transform");
    Some(TreeEnsemble { trees, base, raw_output: transform.is_empty() || transform == b"NONE", float32 })
}

/// The `TreeEnsemble` op (`ai.onnx.ml` opset 5): nodes of all trees in shared arrays,
/// `tree_roots` pointing into them, a child being a node or (`nodes_*leafs`) a leaf; leaves
/// carry a target and a weight; thresholds are a tensor (float or double); no base values.
fn read_tree_ensemble(node: &Node, column: usize, features: usize, float32: bool) -> Option<TreeEnsemble> {
    let ints = |name: &str| node.attribute(name).map(|a| a.ints.clone()).unwrap_or_default();
    let tensor = |name: &str| node.attribute(name).and_then(|a| a.t.as_ref()).map(|t| t.values.clone());
    let (roots, feature_ids) = (ints("tree_roots"), ints("nodes_featureids"));
    let (yes_ids, no_ids) = (ints("nodes_truenodeids"), ints("nodes_falsenodeids"));
    let (yes_leaf, no_leaf) = (ints("nodes_trueleafs"), ints("nodes_falseleafs"));
    let missing = ints("nodes_missing_value_tracks_true");
    let (splits, modes) = (tensor("nodes_splits")?, tensor("nodes_modes")?);
    let (leaf_targets, leaf_weights) = (ints("leaf_targetids"), tensor("leaf_weights")?);
    let n = feature_ids.len();
    let lengths = [splits.len(), modes.len(), yes_ids.len(), no_ids.len(), yes_leaf.len(), no_leaf.len()];
    if n == 0 || lengths.iter().any(|&len| len != n) || !(missing.is_empty() || missing.len() == n) {
        return None;
    }
    if leaf_targets.len() != leaf_weights.len() || roots.is_empty() {
        return None;
    }
    let averaged = match node.attribute("aggregate_function").and_then(|a| a.i).unwrap_or(1) {
        0 => true,
        1 => false,
        _ => return None,
    };
    let leaf_value = |i: usize| -> Option<f64> {
        let weight = *leaf_weights.get(i)?;
        Some(if *leaf_targets.get(i)? == column as i64 { weight } else { 0.0 })
    };
    let count = roots.len() as f64;
    let mut trees = Vec::with_capacity(roots.len());
    for &root in &roots {
        // Copy the tree reachable from its root, nodes first-seen order, refusing loops.
        let mut built: Vec<TreeNode> = Vec::new();
        let mut stack: Vec<(usize, Option<(usize, bool)>)> = vec![(usize::try_from(root).ok()?, None)];
        let mut seen = vec![false; n];
        while let Some((at, parent)) = stack.pop() {
            if at >= n || std::mem::replace(&mut seen[at], true) {
                return None;
            }
            let mode = match modes[at] as i64 {
                0 => Mode::Leq,
                1 => Mode::Lt,
                2 => Mode::Gte,
                3 => Mode::Gt,
                4 => Mode::Eq,
                5 => Mode::Neq,
                _ => return None, // 6: BRANCH_MEMBER, membership sets: not read
            };
            let feature = usize::try_from(feature_ids[at]).ok().filter(|&f| f < features)?;
            let index = built.len();
            built.push(TreeNode::Split {
                feature,
                threshold: splits[at],
                mode,
                yes: usize::MAX,
                no: usize::MAX,
                missing_yes: missing.get(at).is_some_and(|&m| m != 0),
            });
            link(&mut built, parent, index);
            for (branch, child, is_leaf) in [(false, no_ids[at], no_leaf[at]), (true, yes_ids[at], yes_leaf[at])] {
                let child = usize::try_from(child).ok()?;
                if is_leaf != 0 {
                    let value = leaf_value(child)? / if averaged { count } else { 1.0 };
                    built.push(TreeNode::Leaf { value });
                    let leaf = built.len() - 1;
                    link(&mut built, Some((index, branch)), leaf);
                } else {
                    stack.push((child, Some((index, branch))));
                }
            }
        }
        root_of(&built)?;
        trees.push((built, 0));
    }
    let transform = node.attribute("post_transform").and_then(|a| a.i).unwrap_or(0);
    Some(TreeEnsemble { trees, base: 0.0, raw_output: transform == 0, float32 })
}

/// Points `parent`'s true (`branch`) or false child at `child`.
fn link(tree: &mut [TreeNode], parent: Option<(usize, bool)>, child: usize) {
    if let Some((parent, branch)) = parent
        && let TreeNode::Split { yes, no, .. } = &mut tree[parent]
    {
        *(if branch { yes } else { no }) = child;
    }
}

/// The root of `tree` (the one node no split points to), if the nodes form a tree: every
/// node reached once from it, so walks end. Anything else is refused.
fn root_of(tree: &[TreeNode]) -> Option<usize> {
    let mut is_child = vec![false; tree.len()];
    for node in tree {
        if let TreeNode::Split { yes, no, .. } = node {
            for child in [*yes, *no] {
                *is_child.get_mut(child)? = true;
            }
        }
    }
    let root = is_child.iter().position(|child| !child)?;
    let mut seen = vec![false; tree.len()];
    let mut stack = vec![(root, 0)];
    while let Some((at, depth)) = stack.pop() {
        // The walks recurse once a level: a deeper tree is refused rather than overflow.
        if depth > MAX_DEPTH || std::mem::replace(&mut seen[at], true) {
            return None;
        }
        if let TreeNode::Split { yes, no, .. } = &tree[at] {
            stack.extend([(*yes, depth + 1), (*no, depth + 1)]);
        }
    }
    Some(root)
}

/// Whether `value` takes the split's true branch, compared as ONNX Runtime does (in
/// `float` for a float model).
fn goes_yes(value: f64, threshold: f64, mode: Mode, missing_yes: bool, float32: bool) -> bool {
    if value.is_nan() {
        return missing_yes;
    }
    let (v, threshold) = if float32 { (value as f32 as f64, threshold as f32 as f64) } else { (value, threshold) };
    match mode {
        Mode::Leq => v <= threshold,
        Mode::Lt => v < threshold,
        Mode::Gte => v >= threshold,
        Mode::Gt => v > threshold,
        Mode::Eq => v == threshold,
        Mode::Neq => v != threshold,
        Mode::Leaf => false,
    }
}

impl TreeEnsemble {
    /// The raw score of `x`.
    pub fn score(&self, x: &[f64]) -> f64 {
        let mut total = self.base;
        for (tree, root) in &self.trees {
            let mut at = *root;
            loop {
                match &tree[at] {
                    TreeNode::Leaf { value } => {
                        total += value;
                        break;
                    }
                    TreeNode::Split { feature, threshold, mode, yes, no, missing_yes } => {
                        let goes = goes_yes(x[*feature], *threshold, *mode, *missing_yes, self.float32);
                        at = if goes { *yes } else { *no };
                    }
                }
            }
        }
        total
    }

    /// Interventional Shapley values of `x` against `background` (see the module
    /// documentation), `features` wide.
    pub fn attributions(&self, x: &[f64], background: &[Vec<f64>], features: usize) -> Vec<f64> {
        let mut factorial = vec![1.0f64; features + 2];
        for k in 1..factorial.len() {
            factorial[k] = factorial[k - 1] * k as f64;
        }
        let mut phi = vec![0.0; features];
        let mut state = Walk { inside: Vec::new(), outside: Vec::new(), factorial: &factorial, float32: self.float32 };
        for r in background {
            for (tree, root) in &self.trees {
                state.walk(tree, *root, x, r, &mut phi);
            }
        }
        let count = background.len() as f64;
        phi.iter_mut().for_each(|v| *v /= count);
        phi
    }
}

/// The features a path requires in `S` (`inside`: it follows `x`) and out of it
/// (`outside`: it follows the background row).
struct Walk<'a> {
    inside: Vec<usize>,
    outside: Vec<usize>,
    factorial: &'a [f64],
    float32: bool,
}

impl Walk<'_> {
    fn walk(&mut self, tree: &[TreeNode], at: usize, x: &[f64], r: &[f64], phi: &mut [f64]) {
        match &tree[at] {
            TreeNode::Leaf { value } => {
                let (a, b) = (self.inside.len(), self.outside.len());
                if a + b == 0 {
                    return;
                }
                let f = self.factorial;
                if a > 0 {
                    let share = value * f[a - 1] * f[b] / f[a + b];
                    self.inside.iter().for_each(|&i| phi[i] += share);
                }
                if b > 0 {
                    let share = value * f[a] * f[b - 1] / f[a + b];
                    self.outside.iter().for_each(|&i| phi[i] -= share);
                }
            }
            TreeNode::Split { feature, threshold, mode, yes, no, missing_yes } => {
                let child = |goes: bool| if goes { *yes } else { *no };
                let by_x = child(goes_yes(x[*feature], *threshold, *mode, *missing_yes, self.float32));
                let by_r = child(goes_yes(r[*feature], *threshold, *mode, *missing_yes, self.float32));
                if self.inside.contains(feature) || by_x == by_r {
                    self.walk(tree, by_x, x, r, phi);
                } else if self.outside.contains(feature) {
                    self.walk(tree, by_r, x, r, phi);
                } else {
                    self.inside.push(*feature);
                    self.walk(tree, by_x, x, r, phi);
                    self.inside.pop();
                    self.outside.push(*feature);
                    self.walk(tree, by_r, x, r, phi);
                    self.outside.pop();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapley;

    /// Two trees over 3 features: tree 0 splits on f0 then f1, tree 1 on f2 then f0.
    fn ensemble() -> TreeEnsemble {
        let split = |feature, threshold, yes, no| TreeNode::Split {
            feature,
            threshold,
            mode: Mode::Leq,
            yes,
            no,
            missing_yes: false,
        };
        let leaf = |value| TreeNode::Leaf { value };
        TreeEnsemble {
            trees: vec![
                (vec![split(0, 0.5, 1, 2), split(1, -1.0, 3, 4), leaf(2.0), leaf(-1.0), leaf(0.5)], 0),
                // Listed leaves first: the root is found, not assumed.
                (vec![leaf(0.25), leaf(3.0), leaf(-2.0), split(0, 1.5, 0, 1), split(2, 0.0, 3, 2)], 4),
            ],
            base: 0.1,
            raw_output: true,
            float32: true,
        }
    }

    #[test]
    fn roots_are_found_and_loops_and_very_deep_trees_refused() {
        // A chain: split i goes to a leaf, or on to the next split.
        let chain = |depth: usize| -> Vec<TreeNode> {
            let mut tree = Vec::new();
            for i in 0..depth {
                tree.push(TreeNode::Split {
                    feature: 0,
                    threshold: 0.0,
                    mode: Mode::Leq,
                    yes: 2 * i + 1,
                    no: 2 * i + 2,
                    missing_yes: false,
                });
                tree.push(TreeNode::Leaf { value: i as f64 });
            }
            tree.push(TreeNode::Leaf { value: -1.0 }); // the last split's false side
            tree
        };
        assert_eq!(root_of(&chain(100)), Some(0));
        assert_eq!(root_of(&chain(MAX_DEPTH + 10)), None);
        let looped = vec![
            TreeNode::Split { feature: 0, threshold: 0.0, mode: Mode::Leq, yes: 1, no: 2, missing_yes: false },
            TreeNode::Split { feature: 0, threshold: 0.0, mode: Mode::Leq, yes: 2, no: 2, missing_yes: false },
            TreeNode::Leaf { value: 1.0 },
        ];
        assert_eq!(root_of(&looped), None);
    }

    #[test]
    fn interventional_values_equal_the_enumeration_of_every_coalition() {
        let model = ensemble();
        let background = vec![vec![0.0, 0.0, 1.0], vec![2.0, -3.0, -1.0], vec![0.7, -0.5, 0.2]];
        let rows = vec![vec![1.0, -2.0, -0.5], vec![0.2, 0.3, 0.4], vec![2.0, -1.0, 0.0]];
        let evaluate = |z: &[f64], width: usize| Ok(z.chunks(width).map(|x| model.score(x)).collect());
        let truth = shapley::exact(&evaluate, &rows, &background).unwrap();
        for (x, want) in rows.iter().zip(&truth) {
            let got = model.attributions(x, &background, 3);
            for (a, b) in got.iter().zip(&want.values) {
                assert!((a - b).abs() < 1e-12, "{got:?} vs {:?}", want.values);
            }
            let base = background.iter().map(|r| model.score(r)).sum::<f64>() / 3.0;
            assert!((got.iter().sum::<f64>() - (model.score(x) - base)).abs() < 1e-12);
        }
    }
}
