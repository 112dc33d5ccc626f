"""Generated books and paths: every backend equals the naive reference, the compiled ones
agree bit for bit, and the spec's invariants hold."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ltvsim
from helpers import assert_identical, assert_same_result, money_scale
from naive import simulate_naive

MODES = ("full", "partial")


# ----------------------------------------------------------------------------- strategies
@st.composite
def price_paths(draw, max_paths=6, max_steps=12, max_assets=2):
    """Paths of 1-``max_assets`` assets: calm moves mixed with big jumps either way."""
    n_assets = draw(st.integers(1, max_assets))
    n_paths = draw(st.integers(1, max_paths))
    n_steps = draw(st.integers(0, max_steps))
    dt = draw(st.sampled_from([1 / 365, 1 / 12, 1.0]))
    move = st.one_of(
        st.floats(0.85, 1.15),
        st.sampled_from([0.05, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 3.0]),
    )
    moves = draw(hnp.arrays(np.float64, (n_paths, n_steps, n_assets), elements=move))
    s0 = np.array(draw(st.lists(st.sampled_from([1.0, 100.0, 3_000.0, 80_000.0, 0.37]),
                                min_size=n_assets, max_size=n_assets)))
    prices = s0 * np.concatenate([np.ones((n_paths, 1, n_assets)), np.cumprod(moves, axis=1)], axis=1)
    dtype = draw(st.sampled_from([np.float64, np.float64, np.float32]))
    return ltvsim.PricePaths(prices.astype(dtype), dt=dt)


@st.composite
def loan_books(draw, paths, max_loans=20, topup=None):
    """Books of 1-``max_loans`` loans valid for ``paths``, started near their call band.

    Edge values are drawn on purpose: m == l, cure 0, fee 0, topup 0 or 1, rate 0, LTV
    at step 0 beyond l, and debts and collateral scaled to extreme magnitudes.
    """
    n = draw(st.integers(1, max_loans))

    def column(elements):
        return draw(st.lists(elements, min_size=n, max_size=n))

    asset = np.array(column(st.integers(0, paths.n_assets - 1)), dtype=np.int64)
    m = np.array(column(st.one_of(st.floats(0.05, 1.5), st.sampled_from([0.5, 0.7, 0.8, 0.95]))))
    spread = np.array(column(st.one_of(st.just(0.0), st.floats(0.0, 0.5), st.sampled_from([0.1, 0.15]))))
    l = m * (1.0 + spread)
    tau = m * np.array(column(st.one_of(st.floats(0.05, 0.99), st.sampled_from([0.5, 0.7, 0.9]))))
    ltv0 = m * np.array(column(st.floats(0.4, 1.4)))
    debt = np.array(column(st.one_of(st.floats(1.0, 1e6), st.sampled_from([100.0, 25_000.0]))))
    scale = draw(st.sampled_from([1.0, 1.0, 1.0, 1.0, 1e-200, 1e200]))
    s0 = np.asarray(paths.prices[:, 0, :], dtype=np.float64).mean(axis=0)[asset]
    collateral = debt / (ltv0 * s0) * scale
    debt = debt * scale
    cure = np.array(column(st.integers(0, 4)), dtype=np.int64)
    fee = np.array(column(st.one_of(st.just(0.0), st.floats(0.0, 0.3), st.sampled_from([0.05, 0.5, 0.99]))))
    if topup is None:
        topup = st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0))
    topup_prob = np.array(column(topup))
    rate = np.array(column(st.one_of(st.just(0.0), st.floats(0.0, 0.5))))
    return ltvsim.LoanBook(
        asset=asset, collateral=collateral, debt=debt, rate=rate, margin_call_ltv=m,
        liquidation_ltv=l, target_ltv=tau, cure_steps=cure, fee=fee, topup_prob=topup_prob,
    )


@st.composite
def cases(draw, max_loans=20, topup=None):
    paths = draw(price_paths())
    book = draw(loan_books(paths, max_loans=max_loans, topup=topup))
    return book, paths


seeds = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2**63, 2**64 - 1]))


# ----------------------------------------------------------------------------- invariants
def check_invariants(r, book, paths, liquidation):
    """The spec's exact invariants, per path, and what the counts must satisfy."""
    n_loans, n_paths = len(book), paths.n_paths
    scale = money_scale(book, paths) / min(1.0, float(book.margin_call_ltv.min()))
    atol = 1e-12 * scale
    np.testing.assert_allclose(
        r.path_proceeds,
        r.path_fees + r.path_interest_recovered + r.path_principal_recovered + r.path_residual,
        rtol=1e-12, atol=atol, err_msg="proceeds = fees + interest + principal + residual",
    )
    np.testing.assert_allclose(
        r.path_loss, r.path_debt_closed - r.path_interest_recovered - r.path_principal_recovered,
        rtol=1e-12, atol=atol, err_msg="loss = debt closed - interest - principal",
    )
    for name in ("loss", "fees", "interest_recovered", "principal_recovered", "residual", "proceeds",
                 "debt_closed", "unrealised"):
        values = getattr(r, f"path_{name}")
        assert values.shape == (n_paths,) and values.dtype == np.float64
        assert np.all(np.isfinite(values)), name
        assert np.all(values >= 0.0), f"negative {name}: {values}"
    assert np.all(r.path_collateral_sold >= 0.0)
    assert np.all(r.loan_loss >= 0.0)
    np.testing.assert_allclose(r.loan_loss.sum(), r.path_loss.sum(), rtol=1e-12, atol=atol)
    for name in ("margin_calls", "liquidations", "full_liquidations", "topups"):
        counts = getattr(r, f"path_{name}")
        assert counts.dtype == np.int64 and np.all(counts >= 0), name
    # A loan is liquidated in full at most once per path.
    assert np.all(r.path_full_liquidations <= n_loans)
    assert np.all(r.path_full_liquidations <= r.path_liquidations)
    assert np.all(r.loan_liquidated <= n_paths) and np.all(r.loan_margin_calls <= n_paths)
    assert r.path_full_liquidations.sum() <= r.loan_liquidated.sum()
    assert np.all(r.path_topups <= r.path_margin_calls)
    if liquidation == "full":
        np.testing.assert_array_equal(r.path_liquidations, r.path_full_liquidations)
        assert r.loan_liquidated.sum() == r.path_full_liquidations.sum()
    else:
        assert r.loan_liquidated.sum() <= r.path_liquidations.sum()
    # No loss without a full liquidation, and the path with no liquidation sold nothing.
    assert np.all(r.path_loss[r.path_full_liquidations == 0] == 0.0)
    assert np.all(r.path_collateral_sold[r.path_liquidations == 0] == 0.0)
    if "step_loss" in r.arrays:
        np.testing.assert_allclose(r.step_loss.sum(axis=1), r.path_loss, rtol=1e-12, atol=atol)
        np.testing.assert_allclose(r.step_collateral_sold.sum(axis=1), r.path_collateral_sold, rtol=1e-12)


# ----------------------------------------------------------------------------- reference
@given(case=cases(), liquidation=st.sampled_from(MODES), seed=seeds)
def test_backend_matches_naive_reference(backend, case, liquidation, seed):
    book, paths = case
    result = ltvsim.simulate(book, paths, backend=backend, liquidation=liquidation, seed=seed, record_steps=True)
    reference = simulate_naive(book, paths, liquidation, seed)
    scale = money_scale(book, paths) / min(1.0, float(book.margin_call_ltv.min()))
    assert_same_result(result, reference, atol=1e-12 * scale, steps=True, label=f"{backend}: ")
    check_invariants(result, book, paths, liquidation)
    assert result.meta["backend"] == backend


@given(case=cases(), liquidation=st.sampled_from(MODES), seed=seeds,
       n_threads=st.integers(1, 3), path_block=st.integers(1, 7))
def test_compiled_backends_are_bit_identical(case, liquidation, seed, n_threads, path_block):
    book, paths = case
    kw = dict(liquidation=liquidation, seed=seed, record_steps=True, n_threads=n_threads, path_block=path_block)
    cython = ltvsim.simulate(book, paths, backend="cython", **kw)
    numba = ltvsim.simulate(book, paths, backend="numba", **kw)
    assert_identical(cython, numba, label="cython vs numba: ")


@settings(max_examples=20)
@given(case=cases(), liquidation=st.sampled_from(MODES), seed=seeds)
def test_threads_and_path_blocks_do_not_change_results(backend, case, liquidation, seed):
    book, paths = case
    base = ltvsim.simulate(book, paths, backend=backend, liquidation=liquidation, seed=seed,
                           record_steps=True, n_threads=1, path_block=paths.n_paths)
    for n_threads in (1, 2, 3):
        for path_block in (1, 3, paths.n_paths):
            other = ltvsim.simulate(book, paths, backend=backend, liquidation=liquidation, seed=seed,
                                    record_steps=True, n_threads=n_threads, path_block=path_block)
            label = f"{backend} n_threads={n_threads} path_block={path_block}: "
            if backend == "numpy":
                # The reference may add per-path sums in another order: counts must agree.
                assert_same_result(other, base, rtol=1e-12, steps=True, label=label)
            else:
                assert_identical(other, base, label=label)


@settings(max_examples=15)
@given(case=cases(max_loans=6), liquidation=st.sampled_from(MODES))
def test_float32_prices_are_read_as_their_float64_values(compiled_backend, case, liquidation):
    book, paths = case
    as32 = ltvsim.PricePaths(np.asarray(paths.prices, dtype=np.float32), dt=paths.dt)
    as64 = ltvsim.PricePaths(np.asarray(as32.prices, dtype=np.float64), dt=paths.dt)
    a = ltvsim.simulate(book, as32, backend=compiled_backend, liquidation=liquidation, record_steps=True)
    b = ltvsim.simulate(book, as64, backend=compiled_backend, liquidation=liquidation, record_steps=True)
    assert_identical(a, b)


# ----------------------------------------------------------------------------- boundaries
@settings(max_examples=25)
@given(
    debt=st.floats(1e-3, 1e9),
    collateral=st.floats(1e-6, 1e6),
    m=st.floats(0.01, 2.0),
    rate=st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
    magnitude=st.sampled_from([1.0, 1e-250, 1e250, 1e-290, 1e290]),
    liquidation=st.sampled_from(MODES),
)
def test_prices_at_the_call_boundary(backend, debt, collateral, m, rate, magnitude, liquidation):
    # Prices within a few ulps of D_t / (q m), where the LTV test flips: every backend,
    # whatever shortcut it takes for loans far from their levels, decides as the rule does.
    debt, dt, n_steps = debt * magnitude, 1 / 12, 3
    g = float(np.exp(np.array([rate]) * dt)[0])
    rows = []
    for ulps in (-12, -3, -2, -1, 0, 1, 2, 3, 12):
        path = []
        d = debt
        for t in range(n_steps + 1):
            if t >= 1:
                d = d * g
            price = d / (collateral * m)
            for _ in range(abs(ulps)):
                price = np.nextafter(price, np.inf if ulps > 0 else 0.0)
            path.append(price)
        rows.append(path)
    prices = np.array(rows)[:, :, None]
    if not (np.all(np.isfinite(prices)) and np.all(prices > 0)):
        return
    paths = ltvsim.PricePaths(prices, dt=dt)
    book = ltvsim.LoanBook(asset=0, collateral=collateral, debt=debt, rate=rate, margin_call_ltv=m,
                           liquidation_ltv=m * 1.5, target_ltv=m / 2, cure_steps=2, fee=0.01)
    result = ltvsim.simulate(book, paths, backend=backend, liquidation=liquidation, record_steps=True)
    reference = simulate_naive(book, paths, liquidation, 0)
    assert_same_result(result, reference, atol=1e-12 * money_scale(book, paths), steps=True)
    # The boundary is where it should be: the cheapest paths are called, the dearest not.
    assert reference["path_margin_calls"][0] >= 1
    assert reference["path_margin_calls"][-1] == 0


# ----------------------------------------------------------------------------- monotonicity
def _first_liquidation_steps(book, paths, backend):
    """[n_loans, n_paths]: first step at which each loan (run alone) sells collateral, or a
    number past the horizon when it never does."""
    never = paths.n_steps + 1
    out = np.full((len(book), paths.n_paths), never, dtype=np.int64)
    for i in range(len(book)):
        alone = book.subset([i])
        r = ltvsim.simulate(alone, paths, backend=backend, record_steps=True)
        sold = r.step_collateral_sold[:, :, int(book.asset[i])] > 0  # [paths, steps]
        hit = sold.any(axis=1)
        out[i, hit] = sold[hit].argmax(axis=1)
    return out


@settings(max_examples=20)
@given(case=cases(max_loans=8, topup=st.just(0.0)), data=st.data())
def test_lower_prices_never_delay_or_prevent_a_liquidation(backend, case, data):
    # Full liquidation, no top-ups: with every price lower or equal, every LTV is higher or
    # equal, so each loan is liquidated on each path no later than before.
    book, paths = case
    prices = np.array(paths.prices, dtype=np.float64)
    factor = data.draw(st.floats(0.05, 0.999), label="factor")
    if data.draw(st.booleans(), label="lower everything"):
        lowered = prices * factor
    else:
        p = data.draw(st.integers(0, paths.n_paths - 1), label="path")
        t = data.draw(st.integers(0, paths.n_steps), label="step")
        a = data.draw(st.integers(0, paths.n_assets - 1), label="asset")
        lowered = prices.copy()
        lowered[p, t, a] *= factor
    before = ltvsim.PricePaths(prices, dt=paths.dt)
    after = ltvsim.PricePaths(lowered, dt=paths.dt)
    first_before = _first_liquidation_steps(book, before, backend)
    first_after = _first_liquidation_steps(book, after, backend)
    assert np.all(first_after <= first_before), (first_before, first_after)
    whole_before = ltvsim.simulate(book, before, backend=backend)
    whole_after = ltvsim.simulate(book, after, backend=backend)
    assert np.all(whole_after.loan_liquidated >= whole_before.loan_liquidated)
    assert np.all(whole_after.path_full_liquidations >= whole_before.path_full_liquidations)
    # The whole-book run agrees with the loans run alone.
    never = paths.n_steps + 1
    np.testing.assert_array_equal(whole_before.loan_liquidated, (first_before < never).sum(axis=1))
    np.testing.assert_array_equal(whole_after.path_full_liquidations, (first_after < never).sum(axis=0))


# ----------------------------------------------------------------------------- seeds
def _topup_case():
    rng = np.random.default_rng(7)
    n_paths, n_steps = 30, 12
    moves = rng.choice([0.8, 0.9, 1.0, 1.1, 1.2], size=(n_paths, n_steps, 1))
    prices = 100.0 * np.concatenate([np.ones((n_paths, 1, 1)), np.cumprod(moves, axis=1)], axis=1)
    book = ltvsim.LoanBook(asset=0, collateral=1.0, debt=np.linspace(40, 70, 25), margin_call_ltv=0.7,
                           liquidation_ltv=0.85, target_ltv=0.5, cure_steps=2, fee=0.02, rate=0.1,
                           topup_prob=0.5)
    return book, ltvsim.PricePaths(prices, dt=1 / 365)


@pytest.mark.parametrize("liquidation", MODES)
def test_same_seed_same_numbers_other_seed_other_topups(backend, liquidation):
    book, paths = _topup_case()
    run = lambda seed: ltvsim.simulate(book, paths, backend=backend, liquidation=liquidation, seed=seed)  # noqa: E731
    a, b, c = run(11), run(11), run(12)
    assert_identical(a, b)
    assert a.path_margin_calls.sum() > 50  # plenty of draws
    assert not np.array_equal(a.path_topups, c.path_topups)
    for seed in (11, 12):
        assert_same_result(run(seed), simulate_naive(book, paths, liquidation, seed), rtol=1e-12)


@pytest.mark.parametrize("topup_prob", [0.0, 1.0])
def test_seed_is_irrelevant_when_topup_is_certain_or_impossible(backend, topup_prob):
    book, paths = _topup_case()
    fields = {name: book.to_dict()[name] for name in ltvsim.book.FIELDS}
    fields["topup_prob"] = topup_prob
    book = ltvsim.LoanBook(**fields)
    results = [ltvsim.simulate(book, paths, backend=backend, seed=seed) for seed in (0, 1, 2**64 - 1)]
    assert_identical(results[0], results[1])
    assert_identical(results[0], results[2])
    assert (results[0].path_topups.sum() > 0) == (topup_prob == 1.0)


# ----------------------------------------------------------------------------- moderate size
@pytest.fixture(scope="module")
def moderate_case():
    book = ltvsim.LoanBook.synthetic(3000, seed=3, initial_ltv=(0.45, 0.8))
    paths = ltvsim.paths.gbm([80_000.0, 3_000.0], 0.0, [0.9, 1.1], corr=[[1.0, 0.8], [0.8, 1.0]],
                             n_paths=50, n_steps=30, dt=1 / 365, seed=5, assets=["BTC", "ETH"])
    return book, paths


@pytest.fixture(scope="module")
def moderate_numpy(moderate_case):
    book, paths = moderate_case
    return {mode: ltvsim.simulate(book, paths, backend="numpy", liquidation=mode, seed=9, record_steps=True)
            for mode in MODES}


@pytest.mark.parametrize("liquidation", MODES)
def test_moderate_synthetic_book_all_backends_agree(moderate_case, moderate_numpy, liquidation):
    book, paths = moderate_case
    reference = moderate_numpy[liquidation]
    # Not a vacuous comparison: every kind of event happens.
    assert reference.path_margin_calls.sum() > 100
    assert reference.path_topups.sum() > 10
    assert reference.path_full_liquidations.sum() > (10 if liquidation == "full" else 0)
    if liquidation == "partial":
        assert reference.path_liquidations.sum() > reference.path_full_liquidations.sum()
    assert reference.path_loss.sum() > 0 or reference.path_residual.sum() > 0
    check_invariants(reference, book, paths, liquidation)
    compiled = {}
    for name, n_threads in (("cython", 2), ("numba", 2), ("cython", 1), ("numba", 3)):
        result = ltvsim.simulate(book, paths, backend=name, liquidation=liquidation, seed=9,
                                 record_steps=True, n_threads=n_threads, path_block=16)
        assert_same_result(result, reference, atol=1e-12 * money_scale(book, paths), steps=True,
                           label=f"{name} vs numpy: ")
        if name in compiled:
            assert_identical(result, compiled[name], label=f"{name} threads: ")
        compiled[name] = result
    assert_identical(compiled["cython"], compiled["numba"], label="cython vs numba: ")
