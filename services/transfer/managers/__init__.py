"""Transfer managers: the ways bytes reach a peer (local, HTTP push, Globus), behind one Protocol (base.py)."""
