"""`atmguard demo`: the Zhezkazgan scenario end to end on the embedded stack."""
