"""The fast twins of the domain's rules: the fence index, batched screening and stepping,
and the core entry a device's pings go through. Imports the domain, never the reverse;
every fast function names its reference twin, and tests/twins/ proves them equal."""
