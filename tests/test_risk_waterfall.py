"""The loss waterfall: by hand on small paths (fund replenishment timing, a loss that
goes through several tranches), and the invariant that the parts add up to the loss."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ltvsim
from ltvsim.risk import CapitalStructure, result_waterfall, waterfall

AMOUNTS = CapitalStructure(reserve=1.0, fee_share=0.5, tranches=[("first loss", 4.0), ("mezzanine", 10.0)],
                           basis="amount")


def test_parts_and_names():
    w = waterfall(np.zeros((2, 3)), None, AMOUNTS)
    assert w.names == ["reserve", "first loss", "mezzanine", "senior"]
    np.testing.assert_array_equal(w.capacity, [1.0, 4.0, 10.0, np.inf])
    assert not w.attached.any()
    assert (w.first_step == -1).all()


def test_by_hand_several_tranches():
    loss = np.array([
        [0.0, 5.0, 0.0, 10.0],   # fund (1 + half of 2 in fees) then first loss, then mezzanine
        [0.0, 0.0, 0.0, 0.0],    # nothing happens; the fund only grows
        [3.0, 0.0, 0.0, 100.0],  # exhausts the fund, both tranches, and reaches the senior lender
    ])
    fees = np.array([
        [0.0, 2.0, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
    ])
    w = waterfall(loss, fees, AMOUNTS)
    np.testing.assert_array_equal(w.absorbed, [
        [2.0, 4.0, 9.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
        [1.0, 4.0, 10.0, 88.0],
    ])
    np.testing.assert_array_equal(w.first_step, [
        [1, 1, 3, -1],
        [-1, -1, -1, -1],
        [0, 0, 3, 3],
    ])
    np.testing.assert_array_equal(w.attached, w.absorbed > 0)
    np.testing.assert_array_equal(w.fund_income, [1.0, 0.5, 0.0])
    np.testing.assert_array_equal(w.fund_end, [0.0, 1.5, 0.0])
    np.testing.assert_array_equal(w.loss, [15.0, 0.0, 103.0])
    np.testing.assert_array_equal(w.part("senior"), [0.0, 0.0, 88.0])


def test_fees_earned_at_a_step_absorb_that_steps_loss():
    """Timing convention: fees are credited before the same step's loss is absorbed;
    fees earned later do not help an earlier loss, but stay in the fund."""
    s = CapitalStructure(reserve=0.0, fee_share=1.0, tranches=[("first loss", 100.0)], basis="amount")
    loss = np.array([[0.0, 5.0, 0.0], [0.0, 5.0, 0.0], [0.0, 5.0, 5.0]])
    fees = np.array([[0.0, 5.0, 0.0], [0.0, 0.0, 5.0], [3.0, 0.0, 4.0]])
    w = waterfall(loss, fees, s)
    np.testing.assert_array_equal(w.part("reserve"), [5.0, 0.0, 7.0])
    np.testing.assert_array_equal(w.part("first loss"), [0.0, 5.0, 3.0])
    np.testing.assert_array_equal(w.fund_end, [0.0, 5.0, 0.0])
    np.testing.assert_array_equal(w.first_step[:, 0], [1, -1, 1])
    np.testing.assert_array_equal(w.first_step[:, 1], [-1, 1, 1])


def test_fee_share_scales_the_replenishment():
    s = CapitalStructure(reserve=0.0, fee_share=0.25, tranches=[], basis="amount")
    w = waterfall([[0.0, 10.0]], [[8.0, 0.0]], s)
    np.testing.assert_array_equal(w.absorbed, [[2.0, 8.0]])
    assert w.names == ["reserve", "senior"]


def test_sizes_as_fractions_of_the_book_debt():
    s = CapitalStructure(reserve=0.01, fee_share=0.0, tranches=[("junior", 0.02)], basis="fraction")
    w = waterfall([[0.0, 50.0]], None, s, total_debt=1000.0)
    np.testing.assert_array_equal(w.capacity, [10.0, 20.0, np.inf])
    np.testing.assert_array_equal(w.absorbed, [[10.0, 20.0, 20.0]])
    with pytest.raises(ValueError, match="total_debt"):
        waterfall([[1.0]], None, s)


@pytest.mark.parametrize("kwargs, match", [
    ({"reserve": -1.0}, "reserve"),
    ({"fee_share": 1.5}, "fee_share"),
    ({"tranches": [("a", 0.0)]}, "size"),
    ({"tranches": [("a", 1.0), ("a", 2.0)]}, "twice"),
    ({"tranches": [("senior", 1.0)]}, "reserved"),
    ({"basis": "percent"}, "basis"),
])
def test_bad_structures_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CapitalStructure(**kwargs)


def test_bad_losses_are_refused():
    with pytest.raises(ValueError, match=r"step_loss\[1, 0\]"):
        waterfall([[0.0], [-1.0]], None, AMOUNTS)
    with pytest.raises(ValueError, match="must match"):
        waterfall([[0.0, 1.0]], [[0.0]], AMOUNTS)


values = st.one_of(st.just(0.0), st.floats(0.0, 1e6, allow_nan=False), st.floats(0.0, 1e-3))


@given(
    loss=hnp.arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 8)), elements=values),
    fee_scale=st.floats(0.0, 10.0),
    reserve=st.floats(0.0, 1e6),
    fee_share=st.floats(0.0, 1.0),
    sizes=st.lists(st.floats(1e-3, 1e6), max_size=4),
)
def test_parts_sum_to_the_loss(loss, fee_scale, reserve, fee_share, sizes):
    fees = np.roll(loss, 1, axis=1) * fee_scale
    s = CapitalStructure(reserve=reserve, fee_share=fee_share,
                         tranches=[(f"t{k}", v) for k, v in enumerate(sizes)], basis="amount")
    w = waterfall(loss, fees, s)
    total = loss.sum(axis=1)
    np.testing.assert_allclose(w.absorbed.sum(axis=1), total, rtol=1e-9, atol=1e-9)
    assert (w.absorbed >= 0).all()
    assert (w.absorbed[:, 1:-1] <= np.asarray(sizes) * (1 + 1e-12)).all()
    assert (w.absorbed[:, 0] <= reserve + w.fund_income + 1e-9 * (1 + total)).all()
    np.testing.assert_array_equal(w.attached, w.first_step >= 0)
    # A part attaches only once every part junior to it is used up (or it is the fund).
    for k in range(2, w.absorbed.shape[1]):
        junior_full = w.absorbed[:, k - 1] >= w.capacity[k - 1] * (1 - 1e-9)
        assert (~w.attached[:, k] | junior_full).all()
        assert (w.first_step[w.attached[:, k], k] >= w.first_step[w.attached[:, k], k - 1]).all()


def test_parts_sum_to_the_realised_loss_of_a_run(backend):
    s0 = {"BTC": 80_000.0, "ETH": 3_000.0}
    paths = ltvsim.paths.gbm(list(s0.values()), 0.0, [1.5, 1.8], corr=[[1, 0.8], [0.8, 1]],
                             n_paths=40, n_steps=12, dt=1 / 365, seed=3, assets=list(s0))
    book = ltvsim.LoanBook.synthetic(1500, seed=3, prices=s0, initial_ltv=(0.6, 0.75))
    result = ltvsim.simulate(book, paths, backend=backend, record_steps=True, seed=3)
    assert result.path_loss.max() > 0
    s = CapitalStructure(reserve=1e-4, fee_share=0.1, tranches=[("first loss", 1e-4), ("mezz", 2e-4)])
    w = result_waterfall(result, s, book=book)
    assert w.per_step
    np.testing.assert_allclose(w.absorbed.sum(axis=1), result.path_loss, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(w.fund_income, 0.1 * result.path_fees, rtol=1e-9, atol=1e-6)
    assert w.attached[:, -1].any()  # the structure is thin enough to reach the senior lender

    # Without per-step data: one step, no fee income (conservative), same total.
    bare = ltvsim.SimulationResult({k: v for k, v in result.arrays.items() if not k.startswith("step_")},
                                   result.meta)
    w0 = result_waterfall(bare, s, book=book)
    assert not w0.per_step
    assert (w0.fund_income == 0).all()
    np.testing.assert_allclose(w0.absorbed.sum(axis=1), result.path_loss, rtol=1e-12)
    assert (w0.part("reserve") <= w.part("reserve") + 1e-6).all()
