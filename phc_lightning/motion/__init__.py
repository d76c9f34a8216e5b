"""Motion files, forward kinematics and the device-resident motion library."""
