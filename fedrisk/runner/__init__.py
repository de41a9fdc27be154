"""The only loop over sweep point x seed x method, and the unit files it leaves behind."""
