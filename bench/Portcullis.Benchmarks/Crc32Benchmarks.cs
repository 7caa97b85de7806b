using System.Buffers.Binary;
using System.Text;
using BenchmarkDotNet.Attributes;

namespace Portcullis.Benchmarks;

/// <summary>
/// The checksum every presented token is checked with before anything else, on the 34 bytes it covers:
/// System.IO.Hashing's CRC-32 (what Portcullis uses) against the slicing-by-8 CRC-32 Portcullis carried by hand
/// before that package was served here (kept below as the baseline; docs/performance.md has the figures).
/// </summary>
[MemoryDiagnoser]
public class Crc32Benchmarks
{
    private readonly byte[] _token = Encoding.ASCII.GetBytes("pcp_" + new string('a', 30));

    [Benchmark(Baseline = true)]
    public uint HandWrittenSlicingBy8() => SlicingBy8Crc32.HashToUInt32(_token);

    [Benchmark]
    public uint SystemIOHashing() => System.IO.Hashing.Crc32.HashToUInt32(_token);
}

/// <summary>CRC-32 as zlib computes it, slicing-by-8: the implementation Portcullis had.</summary>
internal static class SlicingBy8Crc32
{
    private static readonly uint[] Tables = BuildTables();

    public static uint HashToUInt32(ReadOnlySpan<byte> data)
    {
        var t = Tables;
        var crc = 0xFFFFFFFFu;
        while (data.Length >= 8)
        {
            var one = BinaryPrimitives.ReadUInt32LittleEndian(data) ^ crc;
            var two = BinaryPrimitives.ReadUInt32LittleEndian(data[4..]);
            crc = t[7 * 256 + (one & 0xFF)] ^ t[6 * 256 + ((one >> 8) & 0xFF)] ^ t[5 * 256 + ((one >> 16) & 0xFF)] ^ t[4 * 256 + (one >> 24)]
                ^ t[3 * 256 + (two & 0xFF)] ^ t[2 * 256 + ((two >> 8) & 0xFF)] ^ t[256 + ((two >> 16) & 0xFF)] ^ t[two >> 24];
            data = data[8..];
        }
        foreach (var b in data)
            crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8);
        return ~crc;
    }

    private static uint[] BuildTables()
    {
        var t = new uint[8 * 256];
        for (uint n = 0; n < 256; n++)
        {
            var c = n;
            for (var k = 0; k < 8; k++)
                c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[n] = c;
        }
        for (var n = 0; n < 256; n++)
        {
            for (var slice = 1; slice < 8; slice++)
                t[slice * 256 + n] = (t[(slice - 1) * 256 + n] >> 8) ^ t[t[(slice - 1) * 256 + n] & 0xFF];
        }
        return t;
    }
}
