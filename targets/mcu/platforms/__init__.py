"""Microcontroller architectures as platforms of the one MCU target (targets/mcu)."""
