"""AD CS web enrollment (``/certsrv``): the sans-I/O page protocol and an async client.

``protocol`` builds the requests and reads the pages (no I/O); ``client`` is the aiohttp client
the RA uses to enroll at a real AD CS or at our own CA.  Nothing here logs a credential."""
