"""The host CPU named next to every CPU timing."""

from jaxhw import host

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni
processor\t: 1
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni
"""


def test_cpu_name_and_vector_flags_from_cpuinfo():
    assert host.cpu_model(CPUINFO) == "AMD EPYC 9654 96-Core Processor"
    assert host.cpu_flags(CPUINFO) == ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"]
    assert host.cpu_name(CPUINFO) == "AMD EPYC 9654 96-Core Processor (AVX-512, 2 cores)"
    avx2 = CPUINFO.replace(" avx512f avx512bw avx512_vnni", "")
    assert host.cpu_name(avx2).endswith("(AVX2, 2 cores)")


def test_without_cpuinfo_the_platform_names_the_cpu():
    assert host.cpu_flags("") == []
    assert host.cpu_model("")  # platform's processor or machine, never empty
