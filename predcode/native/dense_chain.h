/* One inference-learning step of a dense chain, written once for float and double.
 *
 * Included twice by dense_chain.c with REAL = float / double and SUFFIX = f32 / f64; the
 * element-wise functions ACT_F/ACT_D/EXP come from there.  The Python side
 * (predcode/native/chain.py) documents the algorithm; it is predcode.reference's step
 * for the graph x_0 -> x_1 -> ... -> x_L with
 *
 *     mu_l = post_l(W_l pre_l(x_{l-1}) + b_l),   E = sum_l E_l(x_l, mu_l),
 *
 * interior energies 1/2 |x_l - mu_l|^2, the output x_L clamped to y (squared error or
 * categorical), relaxed for T steps of momentum SGD (momentum 0: gradient descent) on the
 * states (sPC) or the errors (ePC), then the Hebbian weight gradients at the relaxed state.
 * Matrix products go to the BLAS gemm passed in (column-major, Fortran interface).
 */

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUFFIX)

typedef void (*FN(gemm_t))(const char *, const char *, const int *, const int *, const int *,
                           const REAL *, const REAL *, const int *, const REAL *, const int *,
                           const REAL *, REAL *, const int *);

/* out[B, n_out] = h[B, n_in] W^T (+ 0): column-major C^T = W h^T. */
static void FN(forward_product)(FN(gemm_t) gemm, int B, int n_in, int n_out, const REAL *W,
                                const REAL *h, REAL *out) {
    const REAL one = 1, zero = 0;
    gemm("T", "N", &n_out, &B, &n_in, &one, W, &n_in, h, &n_in, &zero, out, &n_out);
}

/* out[B, n_in] = delta[B, n_out] W: column-major out^T = W^T delta^T. */
static void FN(backward_product)(FN(gemm_t) gemm, int B, int n_in, int n_out, const REAL *W,
                                 const REAL *delta, REAL *out) {
    const REAL one = 1, zero = 0;
    gemm("N", "N", &n_in, &B, &n_out, &one, W, &n_in, delta, &n_out, &zero, out, &n_in);
}

/* dW[n_out, n_in] (+)= scale * delta^T h: column-major dW^T = h^T delta. */
static void FN(weight_product)(FN(gemm_t) gemm, int B, int n_in, int n_out, const REAL *delta,
                               const REAL *h, REAL scale, REAL beta, REAL *dW) {
    gemm("N", "T", &n_in, &n_out, &B, &scale, h, &n_in, delta, &n_out, &beta, dW, &n_in);
}

/* a = a + b (bias), mu = post(a), dpost = post'(a); n rows of width w. */
static void FN(activate)(int rows, int w, REAL *a, const REAL *bias, int code, REAL slope,
                         REAL *mu, REAL *dpost) {
#pragma omp parallel for schedule(static) if ((size_t)rows * w >= PARALLEL_MIN)
    for (int r = 0; r < rows; ++r) {
        REAL *ar = a + (size_t)r * w, *mr = mu + (size_t)r * w, *dr = dpost + (size_t)r * w;
        if (bias) {
#pragma omp simd
            for (int j = 0; j < w; ++j) ar[j] += bias[j];
        }
        ACT_LOOP(code, slope, w, ar, mr, dr);
    }
}

/* h = pre(x), dpre = pre'(x). */
static void FN(pre_activate)(size_t n, const REAL *x, int code, REAL slope, REAL *h, REAL *dpre) {
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (size_t c = 0; c < n; c += PARALLEL_CHUNK) {
        size_t m = n - c < PARALLEL_CHUNK ? n - c : PARALLEL_CHUNK;
        ACT_LOOP(code, slope, m, (x + c), (h + c), (dpre + c));
    }
}

/* Interior Gaussian node: delta = dpost * e with e = x - mu; returns sum e^2 / 2. */
static double FN(interior_error)(size_t n, const REAL *x, const REAL *mu, const REAL *dpost,
                                 REAL *delta) {
    REAL total = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : total) if (n >= PARALLEL_MIN)
    for (size_t k = 0; k < n; ++k) {
        REAL d = x[k] - mu[k];
        delta[k] = dpost[k] * d;
        total += d * d;
    }
    return 0.5 * (double)total;
}

/* ePC interior node: x = mu + e (the sweep), delta = dpost * e; returns sum e^2 / 2. */
static double FN(sweep_error)(size_t n, const REAL *mu, const REAL *e, const REAL *dpost,
                              REAL *x, REAL *delta) {
    REAL total = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : total) if (n >= PARALLEL_MIN)
    for (size_t k = 0; k < n; ++k) {
        REAL d = e[k];
        x[k] = mu[k] + d;
        delta[k] = dpost[k] * d;
        total += d * d;
    }
    return 0.5 * (double)total;
}

/* The clamped output's error e = -dE/dmu and energy (summed over the batch):
 * squared error (kind 0): e = y - mu, E = |y - mu|^2 / 2;
 * categorical (kind 1): e = y - softmax(mu), E = sum y log y - y log softmax(mu). */
static double FN(output_error)(int B, int w, int kind, const REAL *y, const REAL *mu,
                               const REAL *dpost, REAL *delta) {
    double total = 0;
    if (kind == 0) return FN(interior_error)((size_t)B * w, y, mu, dpost, delta); /* a Gaussian node at y */
    for (int r = 0; r < B; ++r) {
        const REAL *yr = y + (size_t)r * w, *mr = mu + (size_t)r * w, *dr = dpost + (size_t)r * w;
        REAL *delr = delta + (size_t)r * w; /* holds exp(mu - max) first */
        REAL top = mr[0];
        for (int j = 1; j < w; ++j) top = mr[j] > top ? mr[j] : top;
        REAL sum = 0;
        for (int j = 0; j < w; ++j) {
            REAL p = EXP(mr[j] - top);
            delr[j] = p;
            sum += p;
        }
        REAL log_z = top + LOG(sum);
        for (int j = 0; j < w; ++j) {
            REAL d = yr[j] - delr[j] / sum;
            delr[j] = dr[j] * d;
            if (yr[j] > 0) total += (double)(yr[j] * (LOG(yr[j]) - (mr[j] - log_z)));
        }
    }
    return total;
}

/* sPC's step of a free state x: g = (x - mu) - dpre * back (back may be NULL: zero), the
 * momentum buffer b = g (first step) or m b + g, x -= lr b; returns sum g^2. */
static double FN(descend)(size_t n, const REAL *mu, const REAL *dpre, const REAL *back,
                          int first, REAL lr, REAL m, REAL *buf, REAL *v) {
    REAL total = 0;
    if (back) {
#pragma omp parallel for simd schedule(static) reduction(+ : total) if (n >= PARALLEL_MIN)
        for (size_t k = 0; k < n; ++k) {
            REAL g = (v[k] - mu[k]) - (dpre ? dpre[k] : (REAL)1) * back[k];
            REAL b = first ? g : m * buf[k] + g;
            buf[k] = b;
            v[k] -= lr * b;
            total += g * g;
        }
    } else {
#pragma omp parallel for simd schedule(static) reduction(+ : total) if (n >= PARALLEL_MIN)
        for (size_t k = 0; k < n; ++k) {
            REAL g = v[k] - mu[k];
            REAL b = first ? g : m * buf[k] + g;
            buf[k] = b;
            v[k] -= lr * b;
            total += g * g;
        }
    }
    return (double)total;
}

/* The arguments, as laid out by predcode/native/chain.py:
 *   L layers; dims[0..L] widths; pre[l], post[l] activation codes and slopes (l = 0..L-1
 *   for layer l+1); W[l], bias[l] (NULL: none); x0 [B, dims0]; y [B, dims_L];
 *   out_kind 0 SE, 1 CE; errors 0 sPC, 1 ePC; T steps; lr, momentum;
 *   work: the workspace, sized by dense_chain_workspace;
 *   dW[l], db[l]: gradient outputs (accumulate: add into them);
 *   rows [T, L+1] per-node energies summed over the batch before each step; norms [T];
 *   final_row [L+1] batch-mean energies at the relaxed state; loss [1]; prediction [B, dims_L].
 */
int FN(dense_chain_step)(FN(gemm_t) gemm, int L, int B, const int *dims, const int *pre,
                         const REAL *pre_slope, const int *post, const REAL *post_slope,
                         const REAL *const *W, const REAL *const *bias, const REAL *x0,
                         const REAL *y, int out_kind, int errors, int T, REAL lr, REAL m,
                         REAL *work, REAL *const *dW, REAL *const *db, int accumulate,
                         REAL *rows, REAL *norms, REAL *final_row, REAL *loss,
                         REAL *prediction) {
    if (L < 1 || L > MAX_LAYERS) return 1;
    /* Carve the workspace: per layer l = 1..L: mu, dpost, delta (B x d_l; delta also holds
     * the linear map's output a_l until the activation has read it); per layer l = 1..L:
     * h (pre(x_{l-1})), dpre (B x d_{l-1}) when pre_l is not the identity; per free node
     * l = 1..L-1: x, back, buf, and (ePC) the errors v (B x d_l). */
    REAL *x[MAX_LAYERS + 1], *a[MAX_LAYERS + 1], *mu[MAX_LAYERS + 1], *dpost[MAX_LAYERS + 1];
    REAL *delta[MAX_LAYERS + 1], *h[MAX_LAYERS + 1], *dpre[MAX_LAYERS + 1];
    REAL *back[MAX_LAYERS + 1], *buf[MAX_LAYERS + 1], *v[MAX_LAYERS + 1];
    /* v: the solver's variables (sPC: the states x_l; ePC: the errors e_l) */
    REAL *p = work;
    for (int l = 1; l <= L; ++l) {
        size_t n = (size_t)B * dims[l];
        mu[l] = p; p += n; dpost[l] = p; p += n; delta[l] = p; p += n;
        a[l] = delta[l];
        if (pre[l - 1] != ACT_IDENTITY) {
            size_t np = (size_t)B * dims[l - 1];
            h[l] = p; p += np; dpre[l] = p; p += np;
        } else {
            h[l] = NULL; dpre[l] = NULL;
        }
        if (l < L) {
            x[l] = p; p += n; back[l] = p; p += n; buf[l] = p; p += n;
            if (errors) { v[l] = p; p += n; } else { v[l] = x[l]; }  /* sPC moves x itself */
        } else {
            x[l] = back[l] = buf[l] = v[l] = NULL;
        }
    }
    x[0] = (REAL *)x0;
    const size_t nL = (size_t)B * dims[L];
    /* the input of layer l's linear map */
#define INPUT_OF(l) (h[l] ? h[l] : x[(l) - 1])
    /* feed-forward pass: every free node at its prediction */
    for (int l = 1; l <= L; ++l) {
        if (h[l]) FN(pre_activate)((size_t)B * dims[l - 1], x[l - 1], pre[l - 1], pre_slope[l - 1], h[l], dpre[l]);
        FN(forward_product)(gemm, B, dims[l - 1], dims[l], W[l - 1], INPUT_OF(l), a[l]);
        FN(activate)(B, dims[l], a[l], bias[l - 1], post[l - 1], post_slope[l - 1], mu[l], dpost[l]);
        if (l < L) memcpy(x[l], mu[l], sizeof(REAL) * (size_t)B * dims[l]);
    }
    memcpy(prediction, mu[L], sizeof(REAL) * nL);
    x[L] = (REAL *)y;
    double out_energy = FN(output_error)(B, dims[L], out_kind, y, mu[L], dpost[L], delta[L]);
    *loss = (REAL)(out_energy / B);
    /* variables: the states x_l themselves (sPC) or the errors e_l, zero at the start (ePC);
     * an interior error is zero until its node or its parent moves: delta_l = 0 until then */
    for (int l = 1; l < L; ++l) {
        size_t n = (size_t)B * dims[l];
        if (errors) memset(v[l], 0, sizeof(REAL) * n);
        memset(delta[l], 0, sizeof(REAL) * n);
    }
    /* Which errors can be non-zero (sPC from the feed-forward pass: they spread one node
     * per step from the output; skipping the zeros changes no number). */
    int moved[MAX_LAYERS + 1] = {0}, live[MAX_LAYERS + 1] = {0};
    double energy_of[MAX_LAYERS + 1];
    for (int t = 0; t <= T; ++t) {
        /* evaluate: predictions of moved parents, errors, energies at the current variables */
        if (!errors) {
            for (int l = 1; l <= L; ++l) live[l] = (l == L) || moved[l] || (l > 1 && moved[l - 1]);
            for (int l = 1; l <= L; ++l) {
                if (l > 1 && moved[l - 1]) {
                    FN(forward_product)(gemm, B, dims[l - 1], dims[l], W[l - 1], INPUT_OF(l), a[l]);
                    FN(activate)(B, dims[l], a[l], bias[l - 1], post[l - 1], post_slope[l - 1], mu[l], dpost[l]);
                }
                if (l == L) {
                    energy_of[l] = (t == 0 || moved[L - 1])
                        ? FN(output_error)(B, dims[L], out_kind, y, mu[L], dpost[L], delta[L])
                        : energy_of[l];
                } else if (live[l]) {
                    energy_of[l] = FN(interior_error)((size_t)B * dims[l], v[l], mu[l], dpost[l], delta[l]);
                } else {
                    energy_of[l] = 0;
                }
            }
        } else {
            /* ePC: the forward sweep x_l = mu_l(x_{l-1}) + e_l (mu_1 is constant) */
            for (int l = 1; l <= L; ++l) {
                if (l > 1 && t > 0) {  /* at t = 0 every error is zero: the feed-forward pass */
                    if (h[l]) FN(pre_activate)((size_t)B * dims[l - 1], x[l - 1], pre[l - 1], pre_slope[l - 1], h[l], dpre[l]);
                    FN(forward_product)(gemm, B, dims[l - 1], dims[l], W[l - 1], INPUT_OF(l), a[l]);
                    FN(activate)(B, dims[l], a[l], bias[l - 1], post[l - 1], post_slope[l - 1], mu[l], dpost[l]);
                }
                if (l == L)
                    energy_of[l] = FN(output_error)(B, dims[L], out_kind, y, mu[L], dpost[L], delta[L]);
                else
                    energy_of[l] = FN(sweep_error)((size_t)B * dims[l], mu[l], v[l], dpost[l], x[l], delta[l]);
            }
        }
        if (t == T) break;
        REAL *row = rows + (size_t)t * (L + 1);
        row[0] = 0;
        for (int l = 1; l <= L; ++l) row[l] = (REAL)energy_of[l];
        /* gradients and the solver step, output side first */
        double norm2 = 0;
        if (!errors) {
            for (int l = L - 1; l >= 1; --l) {
                size_t n = (size_t)B * dims[l];
                const REAL *bk = NULL;
                if (live[l + 1]) {
                    FN(backward_product)(gemm, B, dims[l], dims[l + 1], W[l], delta[l + 1], back[l]);
                    bk = back[l];
                }
                if (!live[l] && !bk) continue;  /* a zero gradient: nothing moves */
                /* sPC: the state itself moves, then the next layer's input follows it */
                norm2 += FN(descend)(n, mu[l], dpre[l + 1], bk, t == 0 || !moved[l], lr, m, buf[l], v[l]);
                moved[l] = 1;
            }
            for (int l = 1; l < L; ++l)
                if (moved[l] && h[l + 1])
                    FN(pre_activate)((size_t)B * dims[l], v[l], pre[l], pre_slope[l], h[l + 1], dpre[l + 1]);
        } else {
            /* ePC: G_l = e_l + J_{l+1}^T s_{l+1}, s_c = delta-weighted signal of the child:
             * s_L = -e_L, s_c = -e_c + G_c (c interior); J^T s = dpre * W^T (dpost * s). */
            for (int l = L - 1; l >= 1; --l) {
                size_t n = (size_t)B * dims[l];
                /* delta[l+1] holds dpost_{l+1} * s_{l+1} with the sign folded in below */
                FN(backward_product)(gemm, B, dims[l], dims[l + 1], W[l], delta[l + 1], back[l]);
                /* G_l = e_l - dpre * back  (since delta_{l+1} = dpost * (-s) ) */
                REAL *G = back[l];
                const REAL *dp = dpre[l + 1];
                const REAL *el = v[l];
                REAL acc = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : acc) if (n >= PARALLEL_MIN)
                for (size_t k = 0; k < n; ++k) {
                    REAL g = el[k] - (dp ? dp[k] : (REAL)1) * G[k];
                    G[k] = g;
                    acc += g * g;
                }
                norm2 += (double)acc;
                if (l > 1) {
                    /* the parent's signal s_l = -e_l + G_l; delta_l = dpost_l * (e_l - G_l) = -dpost_l * s_l */
                    REAL *dl = delta[l];
                    const REAL *dq = dpost[l];
#pragma omp parallel for simd schedule(static) if (n >= PARALLEL_MIN)
                    for (size_t k = 0; k < n; ++k) dl[k] = dq[k] * (el[k] - G[k]);
                }
            }
            for (int l = 1; l < L; ++l) {
                size_t n = (size_t)B * dims[l];
                REAL *G = back[l], *bl = buf[l], *vl = v[l];
                int first = t == 0;
#pragma omp parallel for simd schedule(static) if (n >= PARALLEL_MIN)
                for (size_t k = 0; k < n; ++k) {
                    REAL b = first ? G[k] : m * bl[k] + G[k];
                    bl[k] = b;
                    vl[k] -= lr * b;
                }
            }
        }
        norms[t] = (REAL)sqrt(norm2 / B);
    }
    for (int l = 0; l <= L; ++l) final_row[l] = (REAL)(l == 0 ? 0 : energy_of[l] / B);
    /* weight gradients at the relaxed state (the last evaluation left delta_l = post' * e_l):
     * dW_l = -1/B delta_l^T h_l, db_l = -1/B sum_b delta_l */
    for (int l = 1; l <= L; ++l) {
        REAL scale = (REAL)(-1.0 / B);
        FN(weight_product)(gemm, B, dims[l - 1], dims[l], delta[l], INPUT_OF(l), scale,
                           accumulate ? (REAL)1 : (REAL)0, dW[l - 1]);
        if (db[l - 1]) {
            REAL *g = db[l - 1];
            int w = dims[l];
            if (!accumulate) memset(g, 0, sizeof(REAL) * w);
            for (int r = 0; r < B; ++r) {
                const REAL *dr = delta[l] + (size_t)r * w;
#pragma omp simd
                for (int j = 0; j < w; ++j) g[j] += scale * dr[j];
            }
        }
    }
#undef INPUT_OF
    return 0;
}

size_t FN(dense_chain_workspace)(int L, int B, const int *dims, const int *pre, int errors) {
    size_t total = 0;
    for (int l = 1; l <= L; ++l) {
        size_t n = (size_t)B * dims[l];
        total += 3 * n;
        if (pre[l - 1] != ACT_IDENTITY) total += 2 * (size_t)B * dims[l - 1];
        if (l < L) total += (errors ? 4 : 3) * n;
    }
    return total;
}
