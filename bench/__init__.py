"""`make bench`: direct vs through tollgate, against a fake upstream."""
