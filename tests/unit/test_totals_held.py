"""The host-wide fair share of the bytes channels keep (plugbox/totals/held.py): the total holds
whatever many holders do, and past it the heaviest holder over its share pays — never a holder
within its share."""

from __future__ import annotations

import pytest

from plugbox.totals.held import HeldTotal, Holding

TOTAL = 1000


class Holder:
    """A holder whose reclaim is recorded (as a channel's would end its worker)."""

    def __init__(self, books: HeldTotal, name: str) -> None:
        self.reasons: list[str] = []
        self.account: Holding = books.holding(name, self.reasons.append)


def test_charges_under_the_total_are_granted_and_counted_by_holder() -> None:
    books = HeldTotal(TOTAL)
    a, b = Holder(books, "a"), Holder(books, "b")
    assert a.account.keep(600) and b.account.keep(400)
    assert books.kept == TOTAL and books.kept_by() == {"a": 600, "b": 400}
    assert books.peak == TOTAL and not books.refused and not books.reclaimed


def test_past_the_total_the_holder_over_its_share_is_refused_and_no_one_is_reclaimed() -> None:
    books = HeldTotal(TOTAL)
    flooder, neighbour = Holder(books, "flooder"), Holder(books, "neighbour")
    assert flooder.account.keep(900) and neighbour.account.keep(100)
    assert not flooder.account.keep(50)  # it holds 900 of a 500-byte share
    assert books.refused == {"flooder": 1}
    assert books.kept == TOTAL and flooder.reasons == [] and neighbour.reasons == []


def test_a_holder_over_its_share_is_refused_rather_than_another_over_its_share_reclaimed() -> None:
    books = HeldTotal(TOTAL)
    a, b, c = Holder(books, "a"), Holder(books, "b"), Holder(books, "c")
    assert a.account.keep(450) and b.account.keep(450) and c.account.keep(100)
    assert not a.account.keep(50)  # its own asking is refused: its bytes are its own to give back
    assert b.reasons == [] and books.kept_by() == {"a": 450, "b": 450, "c": 100}


def test_a_neighbour_within_its_share_gets_room_from_the_heaviest_which_is_reclaimed() -> None:
    books = HeldTotal(TOTAL)
    big, bigger, small = Holder(books, "big"), Holder(books, "bigger"), Holder(books, "small")
    assert big.account.keep(350) and bigger.account.keep(600)
    assert small.account.keep(200)  # share 333: within it, though the total is full
    assert bigger.reasons and "channel_bytes_total = 1000" in bigger.reasons[0]
    assert "over its fair share" in bigger.reasons[0]
    assert big.reasons == [] and small.reasons == []
    assert books.kept_by() == {"big": 350, "small": 200} and books.reclaimed == {"bigger": 1}
    assert not books.refused and books.peak <= TOTAL


def test_a_forced_charge_past_the_total_reclaims_the_heaviest_even_its_own_holder() -> None:
    books = HeldTotal(TOTAL)
    flooder, neighbour = Holder(books, "flooder"), Holder(books, "neighbour")
    assert neighbour.account.keep(300) and flooder.account.keep(600)
    flooder.account.force(200)  # bytes already spent: cannot be refused
    assert len(flooder.reasons) == 1 and neighbour.reasons == []
    assert books.kept_by() == {"neighbour": 300} and books.peak <= TOTAL
    neighbour.account.force(650)  # alone now: the whole total is its share
    assert neighbour.reasons == [] and books.kept == 950


def test_a_reclaimed_holding_keeps_nothing_and_charges_on_it_are_no_ops() -> None:
    books = HeldTotal(TOTAL)
    flooder, neighbour = Holder(books, "flooder"), Holder(books, "neighbour")
    neighbour.account.keep(100)
    flooder.account.force(TOTAL)
    assert flooder.reasons and flooder.account.closed
    assert not flooder.account.keep(1)
    flooder.account.force(10)
    flooder.account.release(10)
    assert books.kept == 100 and books.kept_by() == {"neighbour": 100}


def test_release_and_close_give_the_bytes_back_once() -> None:
    books = HeldTotal(TOTAL)
    a = Holder(books, "a")
    a.account.keep(700)
    a.account.release(200)
    assert books.kept == 500
    a.account.release(10_000)  # never below nothing
    assert books.kept == 0
    a.account.keep(300)
    a.account.close()
    a.account.close()
    assert books.kept == 0 and books.kept_by() == {}
    b = Holder(books, "b")
    assert b.account.keep(TOTAL)  # everything a closed holder kept is free again
    assert books.peak == TOTAL


def test_the_fair_share_counts_the_holders_keeping_something_and_the_one_asking() -> None:
    books = HeldTotal(TOTAL)
    a, b, c = Holder(books, "a"), Holder(books, "b"), Holder(books, "c")
    assert books.fair_share() == TOTAL
    a.account.keep(10)
    b.account.keep(10)
    assert books.fair_share() == TOTAL // 2
    assert books.fair_share(c.account) == TOTAL // 3
    assert books.fair_share(a.account) == TOTAL // 2


def test_many_flooders_never_take_the_books_past_the_total_nor_a_small_neighbour_out() -> None:
    books = HeldTotal(TOTAL)
    neighbour = Holder(books, "neighbour")
    flooders = [Holder(books, f"f{i}") for i in range(8)]
    for round_ in range(50):
        for f in flooders:
            if not f.account.closed:
                f.account.force(37) if round_ % 2 else f.account.keep(41)
            assert books.kept <= TOTAL
        assert neighbour.account.keep(1)  # 50 bytes at most: within any share of 8 or fewer
    assert neighbour.reasons == [] and books.kept_by()["neighbour"] == 50
    assert sum(books.reclaimed.values()) >= 1 and "neighbour" not in books.refused


def test_a_total_of_nothing_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="channel_bytes_total"):
        HeldTotal(0)


class Queue:
    """A holder whose bytes grow unseen (a transport's write buffer) and are charged when measured."""

    def __init__(self, books: HeldTotal, name: str) -> None:
        self.reasons: list[str] = []
        self.size = 0  # what it really keeps now
        self.charged = 0
        self.measured = 0
        self.account = books.holding(name, self.reasons.append, self.measure)

    def measure(self) -> None:
        self.measured += 1
        more, self.charged = self.size - self.charged, self.size
        if more > 0:
            self.account.force(more)
        elif more < 0:
            self.account.release(-more)


def test_bytes_that_grow_unseen_are_on_the_books_once_measured_and_off_once_gone() -> None:
    books = HeldTotal(TOTAL)
    q = Queue(books, "slow")
    q.size = 400
    assert books.kept == 0  # grown with nothing to charge it
    books.measure()
    assert books.kept_by() == {"slow": 400} and books.measures == 1
    q.size = 100
    books.measure()
    assert books.kept == 100
    q.size = 0
    books.measure()
    assert books.kept == 0 and books.kept_by() == {}


def test_a_measure_past_the_total_ends_the_heaviest_over_its_share_and_spares_the_one_within() -> None:
    books = HeldTotal(TOTAL)
    slow = [Queue(books, f"slow{i}") for i in range(3)]
    neighbour = Queue(books, "neighbour")
    for i, q in enumerate(slow):
        q.size = 400 + i  # each below its own limit; together past the total
    neighbour.size = 50
    books.measure()
    assert books.kept <= TOTAL and books.peak <= TOTAL
    assert books.reclaimed == {"slow2": 1} and "channel_bytes_total" in slow[2].reasons[0]
    assert books.kept_by() == {"slow0": 400, "slow1": 401, "neighbour": 50}
    assert neighbour.reasons == [] and not books.refused


def test_a_measure_skips_holdings_closed_before_or_during_it() -> None:
    books = HeldTotal(TOTAL)
    closed, grower, heavy = Queue(books, "closed"), Queue(books, "grower"), Queue(books, "heavy")
    closed.account.close()
    assert heavy.account.keep(600)  # (held answers, say): the heaviest, over its share once the total is passed
    grower.size = 500
    books.measure()  # the grower (measured first: opened first) takes the books past the total
    assert books.reclaimed == {"heavy": 1} and books.kept_by() == {"grower": 500}
    assert closed.measured == 0 and heavy.measured == 0  # the heavy one was reclaimed before its turn


def test_holdings_with_nothing_to_measure_are_left_alone() -> None:
    books = HeldTotal(TOTAL)
    plain = Holder(books, "plain")
    assert plain.account.keep(300)
    books.measure()
    assert books.kept_by() == {"plain": 300} and books.measures == 1
