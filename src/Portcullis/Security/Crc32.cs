using System.Buffers.Binary;

namespace Portcullis.Security;

/// <summary>
/// CRC-32 as zlib computes it (IEEE 802.3 polynomial, reflected, initial and final XOR 0xFFFFFFFF),
/// slicing-by-8: eight table lookups per 8 input bytes instead of one per byte, which matters on the
/// verification path. System.IO.Hashing is not in the package registry here.
/// </summary>
internal static class Crc32
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
