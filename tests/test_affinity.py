"""Which llama.cpp slot each call's requests name (aicallerd.engines.affinity)."""

from aicallerd.engines.affinity import SlotLease, SlotTable


def test_each_open_call_keeps_a_slot_of_its_own() -> None:
    table = SlotTable(2)
    a, b = SlotLease(), SlotLease()
    assert table.slot_for(a) == 0
    assert table.slot_for(b) == 1
    assert [table.slot_for(a), table.slot_for(b), table.slot_for(a)] == [0, 1, 0]


def test_a_call_that_ended_gives_its_slot_to_the_next() -> None:
    table = SlotTable(2)
    a, b, c = SlotLease(), SlotLease(), SlotLease()
    table.slot_for(a)
    table.slot_for(b)
    b.close()
    assert table.slot_for(b) is None  # an ended call's late request names no slot
    assert table.slot_for(c) == 1
    a.close()
    d = SlotLease()
    assert table.slot_for(d) == 0


def test_the_free_slot_claimed_longest_ago_goes_first() -> None:
    table = SlotTable(3)
    leases = [SlotLease() for _ in range(3)]
    for lease in leases:
        table.slot_for(lease)
    leases[2].close()
    leases[0].close()
    assert table.slot_for(SlotLease()) == 0


def test_with_more_calls_than_slots_no_call_names_one() -> None:
    """A call without a slot could be handed a busy call's slot by the server, and that call
    would then wait for the other's whole reply: while they are too many, the server picks."""
    table = SlotTable(1)
    a, b = SlotLease(), SlotLease()
    assert table.slot_for(a) == 0
    assert table.slot_for(b) is None
    assert table.slot_for(a) is None
    b.close()
    assert table.slot_for(a) == 0  # one call again: its slot (and cache) as before
    assert table.slot_for(None) is None
    assert SlotTable(0).slot_for(SlotLease()) is None


def test_a_lease_from_a_table_with_more_slots_is_given_a_new_one() -> None:
    """After a reload the server may have fewer slots than a running call's lease named."""
    lease = SlotLease()
    big = SlotTable(4)
    for _ in range(3):
        big.slot_for(SlotLease())
    assert big.slot_for(lease) == 3
    assert SlotTable(2).slot_for(lease) == 0
