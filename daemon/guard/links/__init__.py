"""One link adapter per kind of instrument, under the one channel guard: what differs
between a Neware server (inquire, download, stop, start, status) and a host-driven
instrument (a galvanostat, its protocol run, its aux devices)."""
