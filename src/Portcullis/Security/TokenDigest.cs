using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Portcullis.Security;

/// <summary>A SHA-256 digest held as four machine words, so it can key a dictionary without allocating.</summary>
[StructLayout(LayoutKind.Auto)]
internal readonly struct TokenDigest : IEquatable<TokenDigest>
{
    private readonly ulong _a, _b, _c, _d;

    public TokenDigest(ReadOnlySpan<byte> sha256)
    {
        if (sha256.Length != 32)
            throw new ArgumentException("A digest is 32 bytes.", nameof(sha256));
        _a = BinaryPrimitives.ReadUInt64LittleEndian(sha256);
        _b = BinaryPrimitives.ReadUInt64LittleEndian(sha256[8..]);
        _c = BinaryPrimitives.ReadUInt64LittleEndian(sha256[16..]);
        _d = BinaryPrimitives.ReadUInt64LittleEndian(sha256[24..]);
    }

    public static TokenDigest FromHex(string hex) => new(Convert.FromHexString(hex));

    public string ToHex()
    {
        Span<byte> bytes = stackalloc byte[32];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, _a);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes[8..], _b);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes[16..], _c);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes[24..], _d);
        return Convert.ToHexStringLower(bytes);
    }

    public bool Equals(TokenDigest other) => _a == other._a & _b == other._b & _c == other._c & _d == other._d;

    public override bool Equals(object? obj) => obj is TokenDigest other && Equals(other);

    // The digest is already uniformly distributed; any 64 bits of it make a good hash code.
    public override int GetHashCode() => (int)_a ^ (int)(_a >> 32);

    public static bool operator ==(TokenDigest left, TokenDigest right) => left.Equals(right);

    public static bool operator !=(TokenDigest left, TokenDigest right) => !left.Equals(right);
}
