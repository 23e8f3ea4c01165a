//! Symmetric n x n matrices as tiles (docs/science.md, section 7).
//!
//! A device refuses any single buffer past its limit (lavapipe: 128 MiB; NVIDIA through wgpu:
//! 2 GiB), however much memory it has, so no n x n matrix is ever one tensor: a Gram matrix, its
//! ridge shift and its Cholesky factor are grids of tiles, each its own tensor below the limit.

use burn::tensor::{Bool, Tensor};
use std::ops::Range;

use crate::compute::{scalar, to_host};
use crate::Error;

/// A symmetric n x n matrix A held as the tiles of its lower triangle.
///
/// Tile (i, j), j <= i, is A[rows(i), rows(j)] with rows(i) = i t .. min((i + 1) t, n): at most
/// t x t entries. The upper triangle is implied, A[rows(j), rows(i)] = A_ij^T. Cloning is cheap
/// (tiles are shared, copy on write).
#[derive(Clone, Debug)]
pub struct SymTiles {
    n: usize,
    tile: usize,
    /// Tile (i, j) at index i (i + 1) / 2 + j.
    tiles: Vec<Tensor<2>>,
}

/// Consecutive ranges of at most `size` (at least 1) covering 0..n: 0..size, size..2 size, ..., ..n.
pub fn blocks(n: usize, size: usize) -> impl Iterator<Item = Range<usize>> {
    let size = size.max(1);
    (0..n).step_by(size).map(move |s| s..(s + size).min(n))
}

/// Index of tile (i, j), j <= i, in the lower-triangle order of [`SymTiles`].
pub(crate) fn index(i: usize, j: usize) -> usize {
    debug_assert!(j <= i, "tile ({i}, {j}) is above the diagonal");
    i * (i + 1) / 2 + j
}

impl SymTiles {
    /// The matrix with tiles A_ij = block(X_i, X_j) for j <= i, X_i the rows `rows(i)` of x
    /// (n x d): a Gram matrix K(X, X) when `block` is a kernel.
    pub fn build(
        x: &Tensor<2>,
        tile: usize,
        mut block: impl FnMut(Tensor<2>, Tensor<2>) -> Result<Tensor<2>, Error>,
    ) -> Result<Self, Error> {
        let [n, d] = x.dims();
        let tile = tile.max(1);
        let rows: Vec<Tensor<2>> = blocks(n, tile).map(|r| x.clone().slice([r, 0..d])).collect();
        let mut tiles = Vec::with_capacity(rows.len() * (rows.len() + 1) / 2);
        for (i, xi) in rows.iter().enumerate() {
            for xj in &rows[..=i] {
                tiles.push(block(xi.clone(), xj.clone())?);
            }
        }
        Ok(SymTiles { n, tile, tiles })
    }

    /// The tiles of a dense symmetric `n x n` matrix (its lower triangle is read).
    pub fn from_dense(a: Tensor<2>, tile: usize) -> Self {
        let n = a.dims()[0];
        let empty = SymTiles { n, tile: tile.max(1), tiles: Vec::new() };
        let mut tiles = Vec::new();
        for i in 0..empty.count() {
            for j in 0..=i {
                tiles.push(a.clone().slice([empty.rows(i), empty.rows(j)]));
            }
        }
        SymTiles { tiles, ..empty }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// Rows (and columns) of a full tile.
    pub fn tile(&self) -> usize {
        self.tile
    }

    /// Tiles per side: ceil(n / t).
    pub fn count(&self) -> usize {
        self.n.div_ceil(self.tile)
    }

    /// The rows (or columns) of tile row i.
    pub fn rows(&self, i: usize) -> Range<usize> {
        i * self.tile..((i + 1) * self.tile).min(self.n)
    }

    /// Tile (i, j), j <= i.
    pub fn get(&self, i: usize, j: usize) -> &Tensor<2> {
        &self.tiles[index(i, j)]
    }

    /// A + mu I: mu added on the diagonal tiles only (no n x n identity).
    pub fn shift_diagonal(mut self, mu: f64) -> Self {
        for i in 0..self.count() {
            let a = self.tiles[index(i, i)].clone();
            let m = a.dims()[0];
            let off_diagonal = Tensor::<2, Bool>::diag_mask([m, m], 0, &a.device());
            let shift = a.ones_like().mask_fill(off_diagonal, 0.0) * mu;
            self.tiles[index(i, i)] = a + shift;
        }
        self
    }

    /// A V for V (n x k): (A V)_i = sum_{j <= i} A_ij V_j + sum_{j > i} A_ji^T V_j. The transposed
    /// products are formed as (V_j^T A_ji)^T, a row-major tile read row by row.
    pub fn matvec(&self, v: &Tensor<2>) -> Tensor<2> {
        let k = v.dims()[1];
        let parts: Vec<Tensor<2>> = (0..self.count()).map(|j| v.clone().slice([self.rows(j), 0..k])).collect();
        let mut out: Vec<Option<Tensor<2>>> = vec![None; self.count()];
        let add = |acc: &mut Option<Tensor<2>>, t: Tensor<2>| *acc = Some(match acc.take() {
            Some(a) => a + t,
            None => t,
        });
        for i in 0..self.count() {
            for j in 0..=i {
                let a = self.get(i, j);
                add(&mut out[i], a.clone().matmul(parts[j].clone()));
                if j < i {
                    add(&mut out[j], parts[i].clone().transpose().matmul(a.clone()).transpose());
                }
            }
        }
        let out: Vec<Tensor<2>> = out.into_iter().flatten().collect();
        match out.len() {
            0 => v.zeros_like(),
            _ => Tensor::cat(out, 0),
        }
    }

    /// ||A||_F, the off-diagonal tiles counted twice.
    pub fn frobenius_norm(&self) -> Result<f64, Error> {
        let mut total = 0.0;
        for i in 0..self.count() {
            for j in 0..=i {
                let weight = if i == j { 1.0 } else { 2.0 };
                total += weight * scalar(self.get(i, j).clone().powi_scalar(2).sum())?;
            }
        }
        Ok(total.sqrt())
    }

    /// The whole matrix on the host, row-major n x n (for checks and small matrices).
    pub fn to_host(&self) -> Result<Vec<f64>, Error> {
        let n = self.n;
        let mut out = vec![0.0; n * n];
        for i in 0..self.count() {
            for j in 0..=i {
                let (ri, rj) = (self.rows(i), self.rows(j));
                let values = to_host(self.get(i, j).clone())?;
                for (a, r) in ri.clone().enumerate() {
                    for (b, s) in rj.clone().enumerate() {
                        let v = values[a * rj.len() + b];
                        out[r * n + s] = v;
                        out[s * n + r] = v;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Takes the tiles out, for algorithms that rewrite them in place ([`crate::linalg::Cholesky`]).
    pub(crate) fn into_parts(self) -> (usize, usize, Vec<Tensor<2>>) {
        (self.n, self.tile, self.tiles)
    }

    pub(crate) fn from_parts(n: usize, tile: usize, tiles: Vec<Tensor<2>>) -> Self {
        debug_assert_eq!(tiles.len(), n.div_ceil(tile) * (n.div_ceil(tile) + 1) / 2);
        SymTiles { n, tile, tiles }
    }
}
