"""The lab: simulated Windows workstations that speak real WS-Management/PSRP on loopback."""
