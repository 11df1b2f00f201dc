"""The end-to-end suite: the whole product on a real cluster, as a user runs it."""
