"""CAPF: the device inventory and policy, the device-protocol service, online-CA enrollment and renewal."""
