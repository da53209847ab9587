"""cpuu-fleet: roll the vendor's Client Profile Updating Utility out to a Windows fleet, wave by wave."""

__version__ = "0.1.0"
