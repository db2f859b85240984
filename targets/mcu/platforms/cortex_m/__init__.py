"""The Cortex-M platform of the MCU target: board support, DSP kernels, boards QEMU emulates."""
