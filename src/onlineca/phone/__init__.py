"""The device simulator: phones that keep their keys, MIC and LSC in a folder and speak the device
protocol to CAPF exactly as a real phone would.

``device`` is one phone (its key material; the private keys never leave the ``Phone`` object),
``client`` runs one session over TLS with the devproto phone-side state machine, ``fleet`` runs
many phones at once and measures them, ``mic`` is a manufacturer CA that gives phones their MICs,
``cli`` is ``onlineca phone ...``.  Nothing here decides policy: the phone does what CAPF asks."""
