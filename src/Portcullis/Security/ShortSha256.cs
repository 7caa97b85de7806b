using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace Portcullis.Security;

/// <summary>
/// SHA-256 of short inputs (a token is one 64-byte block) for the verification hot path.
/// <see cref="SHA256.HashData(ReadOnlySpan{byte}, Span{byte})"/> goes through OpenSSL 3's EVP layer,
/// whose per-call set-up (algorithm fetch, context allocation) costs about 1 µs — far more than
/// hashing one block. The same OpenSSL library also exports the direct SHA256_Init/Update/Final
/// functions, which hash one block in well under 0.2 µs on a stack-allocated context. They are used
/// when present and when they reproduce the FIPS 180-2 test vector at start; otherwise this falls
/// back to <see cref="SHA256.HashData(ReadOnlySpan{byte}, Span{byte})"/>. Either way the digest is
/// the same, so stored hashes never depend on which path ran.
/// </summary>
internal static unsafe class ShortSha256
{
    // sizeof(SHA256_CTX) is 112 bytes in OpenSSL 1.1 and 3.x; leave generous room.
    private const int ContextSize = 256;

    private static readonly delegate* unmanaged<byte*, int> Init;
    private static readonly delegate* unmanaged<byte*, byte*, nuint, int> Update;
    private static readonly delegate* unmanaged<byte*, byte*, int> Final;

    public static bool UsesDirectOpenSsl { get; }

    static ShortSha256()
    {
        if (!OperatingSystem.IsLinux())
            return;
        foreach (var name in (ReadOnlySpan<string>)["libcrypto.so.3", "libcrypto.so.1.1"])
        {
            if (!NativeLibrary.TryLoad(name, out var library))
                continue;
            if (NativeLibrary.TryGetExport(library, "SHA256_Init", out var init) &&
                NativeLibrary.TryGetExport(library, "SHA256_Update", out var update) &&
                NativeLibrary.TryGetExport(library, "SHA256_Final", out var final))
            {
                Init = (delegate* unmanaged<byte*, int>)init;
                Update = (delegate* unmanaged<byte*, byte*, nuint, int>)update;
                Final = (delegate* unmanaged<byte*, byte*, int>)final;
                UsesDirectOpenSsl = SelfTest();
                return;
            }
        }
    }

    public static void Hash(ReadOnlySpan<byte> data, Span<byte> destination)
    {
        if (destination.Length < 32)
            throw new ArgumentException("SHA-256 needs 32 bytes.", nameof(destination));
        if (!UsesDirectOpenSsl || !HashDirect(data, destination))
            SHA256.HashData(data, destination);
    }

    private static bool HashDirect(ReadOnlySpan<byte> data, Span<byte> destination)
    {
        var context = stackalloc byte[ContextSize];
        fixed (byte* input = data)
        fixed (byte* output = destination)
        {
            return Init(context) == 1 && Update(context, input, (nuint)data.Length) == 1 && Final(output, context) == 1;
        }
    }

    private static bool SelfTest()
    {
        // FIPS 180-2 appendix B.1: SHA-256("abc"), and a token-sized input checked against the managed path.
        Span<byte> actual = stackalloc byte[32];
        if (!HashDirect("abc"u8, actual) ||
            !actual.SequenceEqual(Convert.FromHexString("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")))
            return false;
        // Token-sized (40 bytes), but not token-shaped: nothing in the source may look like a leaked secret.
        var sample = "self-test input of forty bytes, no token"u8;
        Span<byte> expected = stackalloc byte[32];
        SHA256.HashData(sample, expected);
        return HashDirect(sample, actual) && actual.SequenceEqual(expected);
    }
}
